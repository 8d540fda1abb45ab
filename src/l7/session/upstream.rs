//! Phase 3 of an exchange: on a server connection, send the re-serialised
//! request head and stream its body, then read the response head — relaying
//! 1xx responses — and re-serialise it for the client.

use crate::net::Stream;

use super::Exchange;
use super::body::{Body, RelayError, relay};
use crate::l7::codec::Framing;
use crate::l7::response::{self, RespFraming, RespHead};
use crate::l7::rewrite::{self, CookieOut, Req, RespEdits};
use crate::net::buf::{self, Buf};
use crate::net::io::{self, Failed, Limit};
use crate::rules;
use crate::runtime::BackendRt;

/// How sending a request or reading its response head failed.
pub enum Upstream {
    /// The server connection failed before any response byte (replayable).
    Early,
    /// A malformed response, or the server failed mid-way.
    Bad,
    Timeout,
    /// The client's chunked body was malformed.
    BodyFraming,
    ClientGone,
}

/// The final response head, its re-serialised form, whether the client
/// connection closes after it, and the bytes read past the head.
pub struct Answer {
    pub head: RespHead,
    pub out: Vec<u8>,
    pub close: bool,
    pub sbuf: Buf,
    /// Request body bytes sent.
    pub sent: u64,
}

impl Exchange<'_> {
    /// Send the request head and body on `upstream`, then read the response head.
    pub(super) async fn send_and_read_head(
        &self,
        upstream: &Stream,
        backend: &BackendRt,
        req: &Req,
        cbuf: &mut Vec<u8>,
        edits: RespEdits<'_>,
    ) -> Result<Answer, Upstream> {
        let server_limit = Some(backend.timeouts.server);
        io::write_all(upstream, &req.upstream_head, server_limit, |_| {})
            .await
            .map_err(|_| Upstream::Early)?;
        let sent = self.send_body(upstream, backend, req, cbuf).await?;
        if cbuf.is_empty() {
            // Nothing more from the client for now: its buffer goes back to the
            // thread's spares while the server works.
            buf::give(std::mem::take(cbuf));
        }
        // Empty: `fill` takes a buffer once the server's bytes arrive.
        let mut sbuf = Buf::default();
        let mut any = false;
        loop {
            // During a graceful stop the response says `connection: close` (one
            // atomic load; the connection then ends after it).
            let closing = self.opts.soft_stop.has_changed().unwrap_or(false);
            match response_step(&sbuf, req, self.front.limits.max_head, edits, closing) {
                Step::Informational(len, out) => {
                    self.write(&out).await.map_err(|_| Upstream::ClientGone)?;
                    sbuf.drain(..len);
                    continue;
                }
                Step::Final(head, out, close) => {
                    sbuf.drain(..head.len);
                    return Ok(Answer {
                        head,
                        out,
                        close,
                        sbuf,
                        sent,
                    });
                }
                Step::More => {}
                Step::Bad => return Err(Upstream::Bad),
            }
            let limit = Limit::After(backend.timeouts.server);
            match io::fill(upstream, &mut sbuf, limit).await {
                Ok(0) | Err(Failed::Io(_)) if any => return Err(Upstream::Bad),
                Ok(0) | Err(Failed::Io(_)) => return Err(Upstream::Early),
                Ok(_) => any = true,
                Err(Failed::Timeout) => return Err(Upstream::Timeout),
            }
        }
    }

    /// `100 Continue` when the client waits for it, then the request body.
    async fn send_body(
        &self,
        upstream: &Stream,
        backend: &BackendRt,
        req: &Req,
        cbuf: &mut Vec<u8>,
    ) -> Result<u64, Upstream> {
        let body = match req.framing {
            Framing::None => return Ok(0),
            Framing::Length(n) => Body::Length(n),
            Framing::Chunked => Body::Chunked,
        };
        if req.expect_continue && cbuf.is_empty() {
            self.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                .await
                .map_err(|_| Upstream::ClientGone)?;
        }
        let mut sent = 0u64;
        let deadlines = (self.front.client_timeout, backend.timeouts.server);
        let r = relay(
            self.client,
            upstream,
            cbuf,
            body,
            deadlines,
            &mut sent,
            self.opts.splice,
        )
        .await;
        self.front.counters.bytes_in.add(sent);
        backend.counters.bytes_in.add(sent);
        r.map(|()| sent).map_err(|e| match e {
            RelayError::Source => Upstream::ClientGone,
            RelayError::Destination => Upstream::Bad,
            RelayError::Framing => Upstream::BodyFraming,
        })
    }
}

/// What the bytes read so far from a server make of its response head.
enum Step {
    /// A 1xx (not 101) of this many bytes, and its re-serialised form: relay
    /// it and read on.
    Informational(usize, Vec<u8>),
    /// The final head, its re-serialised form, and whether the client
    /// connection closes after it.
    Final(RespHead, Vec<u8>, bool),
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
        return switching(sbuf, headers, r, req, edits);
    }
    let close = req.close || closing || r.framing == RespFraming::Close;
    // A small body already read goes out with the head: room for it now.
    let body = match r.framing {
        RespFraming::Length(n) => usize::try_from(n)
            .ok()
            .filter(|n| *n <= sbuf.len() - r.len && *n <= buf::LARGE)
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

/// A 101 only for a WebSocket handshake, with a matching Upgrade: the
/// connection becomes a tunnel. Anything else is a protocol error.
fn switching(
    sbuf: &[u8],
    headers: &[httparse::Header<'_>],
    r: RespHead,
    req: &Req,
    edits: RespEdits<'_>,
) -> Step {
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
    Step::Final(r, out, true)
}
