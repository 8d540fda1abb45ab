//! Re-serialising heads: the request fulcrum sends upstream and the response it
//! sends back — CRLF only, hop-by-hop fields dropped, forwarding fields added,
//! and the rules' header edits and persistence cookies applied.
//!
//! Framing is never copied: every `Content-Length` and `Transfer-Encoding`
//! field of the input is dropped and the parser's [`Declared`] value is written
//! instead (`framing.rs`), so the head always says what the body relay does.
//! A debug build re-parses every head it writes and asserts exactly that.

use std::io::Write as _;
use std::net::SocketAddr;

use super::codec::{self, Framing};
use super::framing::{Declared, is_framing_field};
use super::persist::{CookieEdit, edit_cookie_field, prefix_set_cookie};
use super::response::{RespFraming, RespHead};
use crate::config::routing::HeaderOp;
use crate::rules::Ops;

/// Hop-by-hop fields, never forwarded in either direction (plus whatever the
/// Connection header names). `Upgrade` and `HTTP2-Settings` are dropped too:
/// WebSocket upgrades are written anew, and h2c must never reach a server.
pub const HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
    "http2-settings",
    "expect",
    "proxy-authenticate",
];

/// A field the serialisers never copy: hop-by-hop (listed, or named by
/// Connection) or framing (written from the parsed `Declared` instead).
fn is_hop(name: &str, named: &Named<'_>) -> bool {
    HOP.iter().any(|h| name.eq_ignore_ascii_case(h))
        || is_framing_field(name)
        || named.iter().any(|n| name.eq_ignore_ascii_case(n))
}

/// Tokens listed by the Connection fields: the first few inline, so the usual
/// `keep-alive` or `close` costs no allocation.
#[derive(Default)]
struct Named<'h> {
    inline: [&'h str; 4],
    len: usize,
    more: Vec<&'h str>,
}

impl<'h> Named<'h> {
    fn push(&mut self, t: &'h str) {
        match self.inline.get_mut(self.len) {
            Some(slot) => {
                *slot = t;
                self.len += 1;
            }
            None => self.more.push(t),
        }
    }

    fn iter(&self) -> impl Iterator<Item = &&'h str> {
        self.inline[..self.len].iter().chain(&self.more)
    }
}

fn connection_tokens<'h>(headers: &[httparse::Header<'h>]) -> Named<'h> {
    let mut named = Named::default();
    for h in headers {
        if h.name.eq_ignore_ascii_case("connection")
            && let Ok(v) = std::str::from_utf8(h.value)
        {
            for t in v.split(',').map(|t| t.trim_matches([' ', '\t'])) {
                if !t.is_empty() {
                    named.push(t);
                }
            }
        }
    }
    named
}

/// A field the header rules remove (`set` replaces, `del` removes).
fn removed(name: &str, ops: Ops<'_>) -> bool {
    ops.iter().any(|op| {
        matches!(op, HeaderOp::Set(..) | HeaderOp::Del(_)) && name.eq_ignore_ascii_case(op.name())
    })
}

fn push_field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

fn push_added(out: &mut Vec<u8>, ops: Ops<'_>) {
    for op in ops.iter() {
        if let HeaderOp::Set(n, v) | HeaderOp::Add(n, v) = op {
            push_field(out, n.as_bytes(), v.as_bytes());
        }
    }
}

/// What the request head told us, owned so the buffer can move on.
pub struct Req {
    pub upstream_head: Vec<u8>,
    pub framing: Framing,
    pub close: bool,
    pub expect_continue: bool,
    pub head_request: bool,
    pub idempotent: bool,
    /// A WebSocket handshake (`Upgrade: websocket` + `Connection: upgrade`, GET, 1.1).
    pub websocket: bool,
    /// The client speaks HTTP/1.0 (so does the request upstream).
    pub http10: bool,
    /// Where the target and the Host value sit in `upstream_head`.
    path: std::ops::Range<usize>,
    host: Option<std::ops::Range<usize>>,
    /// The Host value lower-cased, only when it has upper-case letters.
    host_lower: Option<Box<str>>,
    /// The normalised target, when it is not the one forwarded
    /// (`path_normalize = "match-only"`).
    pub route_path: Option<Box<str>>,
    /// The length of the client's head, and the request id sent upstream (0: none).
    pub head_len: usize,
    pub request_id: u64,
}

impl Req {
    /// The request target routing and balancing see (origin-form, normalised
    /// unless `path_normalize = "off"`).
    pub fn path(&self) -> &str {
        match &self.route_path {
            Some(p) => p,
            None => self.text(self.path.clone()),
        }
    }

    /// The authority, lower-cased (what hash balancers and routing see).
    pub fn host(&self) -> Option<&str> {
        match &self.host_lower {
            Some(h) => Some(h),
            None => self.host.clone().map(|r| self.text(r)),
        }
    }

    /// The method, as forwarded.
    pub fn method(&self) -> &str {
        let end = self.upstream_head.iter().position(|&b| b == b' ');
        std::str::from_utf8(&self.upstream_head[..end.unwrap_or(0)]).unwrap_or("")
    }

    fn text(&self, r: std::ops::Range<usize>) -> &str {
        // Both ranges were copied from `&str`s at char boundaries.
        self.upstream_head
            .get(r)
            .and_then(|b| std::str::from_utf8(b).ok())
            .unwrap_or("")
    }
}

/// Which forwarding fields a frontend adds to requests.
#[derive(Debug, Clone, Copy, Default)]
pub struct Forwarding<'a> {
    /// `X-Forwarded-For` (appended to the client's) and `X-Forwarded-Proto`.
    pub x_forwarded: bool,
    /// RFC 7239 `Forwarded`.
    pub forwarded: bool,
    /// The client came over TLS: `proto=https`.
    pub https: bool,
    /// The request id's field name and value (`[log] request_id`): the
    /// client's own field of that name is replaced.
    pub request_id: Option<(&'a str, u64)>,
}

/// The request to send upstream, with the rules' `ops` and the persistence
/// cookie `edit` applied.
pub fn request(
    head: &codec::Head<'_>,
    headers: &[httparse::Header<'_>],
    peer: SocketAddr,
    front: Forwarding<'_>,
    ops: Ops<'_>,
    edit: CookieEdit<'_>,
) -> Req {
    let named = connection_tokens(headers);
    let mut out = Vec::with_capacity(head.len + 96);
    out.extend_from_slice(head.method.as_bytes());
    out.push(b' ');
    let path = out.len()..out.len() + head.path.len();
    out.extend_from_slice(head.path.as_bytes());
    // A 1.0 client gets a 1.0 request upstream, so the response is never chunked
    // (which that client could not read).
    out.extend_from_slice(if head.minor == 0 {
        b" HTTP/1.0\r\n"
    } else {
        b" HTTP/1.1\r\n"
    });
    let mut host = None;
    if let Some(a) = head.authority {
        let at = out.len() + b"host: ".len();
        host = Some(at..at + a.len());
        push_field(&mut out, b"host", a.as_bytes());
    }
    let (xff, framing_due) = copy_fields(&mut out, head, headers, &named, (front, ops, edit));
    push_forwarding(&mut out, front, peer, xff);
    push_added(&mut out, ops);
    let websocket = is_websocket(head, headers, &named);
    if websocket {
        // Only a WebSocket upgrade is passed on (never h2c): the hop-by-hop
        // Upgrade and Connection fields are written anew for it.
        out.extend_from_slice(b"connection: upgrade\r\nupgrade: websocket\r\n");
    }
    // The framing the parser decided, and nothing else about framing.
    if framing_due {
        head.declared.write(&mut out);
    }
    // HTTP/1.1 upstream: keep-alive by default, the connection may be pooled.
    out.extend_from_slice(b"\r\n");
    debug_assert_eq!(
        reparse_request(&out),
        Some((head.framing, head.declared)),
        "a forwarded request head must be framed as parsed: {}",
        String::from_utf8_lossy(&out)
    );
    Req {
        upstream_head: out,
        framing: head.framing,
        close: head.close,
        expect_continue: head.expect_continue,
        head_request: head.method == "HEAD",
        idempotent: matches!(
            head.method,
            "GET" | "HEAD" | "OPTIONS" | "TRACE" | "PUT" | "DELETE"
        ),
        websocket,
        http10: head.minor == 0,
        path,
        host,
        host_lower: head
            .authority
            .filter(|a| a.bytes().any(|b| b.is_ascii_uppercase()))
            .map(|a| a.to_ascii_lowercase().into_boxed_str()),
        route_path: None,
        head_len: head.len,
        request_id: front.request_id.map_or(0, |(_, id)| id),
    }
}

/// The client's fields that go on: not hop-by-hop, not framing (the declared
/// framing is written where the first framing field was, so the order of
/// fields is kept), not Host, not the forwarding fields fulcrum rewrites, not
/// removed by a rule; the Cookie field edited for persistence. Returns the
/// client's X-Forwarded-For, and whether the framing is still to be written.
fn copy_fields<'h>(
    out: &mut Vec<u8>,
    head: &codec::Head<'_>,
    headers: &[httparse::Header<'h>],
    named: &Named<'_>,
    (front, ops, edit): (Forwarding<'_>, Ops<'_>, CookieEdit<'_>),
) -> (Option<&'h [u8]>, bool) {
    let mut xff = None;
    let mut framing_due = true;
    for h in headers {
        let n = h.name;
        if framing_due && is_framing_field(n) {
            head.declared.write(out);
            framing_due = false;
        }
        if is_hop(n, named) || n.eq_ignore_ascii_case("host") {
            continue;
        }
        if front.x_forwarded
            && (n.eq_ignore_ascii_case("x-forwarded-for")
                || n.eq_ignore_ascii_case("x-forwarded-proto"))
        {
            if n.eq_ignore_ascii_case("x-forwarded-for") {
                xff = Some(h.value);
            }
            continue;
        }
        if !ops.is_empty() && removed(n, ops) {
            continue;
        }
        if front
            .request_id
            .is_some_and(|(name, _)| n.eq_ignore_ascii_case(name))
        {
            continue;
        }
        if edit != CookieEdit::Keep && n.eq_ignore_ascii_case("cookie") {
            let mark = out.len();
            out.extend_from_slice(b"cookie: ");
            if edit_cookie_field(h.value, edit, out) {
                out.extend_from_slice(b"\r\n");
            } else {
                out.truncate(mark);
            }
            continue;
        }
        push_field(out, n.as_bytes(), h.value);
    }
    (xff, framing_due)
}

/// X-Forwarded-For (after the client's own, if any) and -Proto, and RFC 7239
/// Forwarded, as the frontend asks.
fn push_forwarding(out: &mut Vec<u8>, front: Forwarding<'_>, peer: SocketAddr, xff: Option<&[u8]>) {
    if let Some((name, id)) = front.request_id {
        let _ = write!(out, "{name}: {id:016x}\r\n");
    }
    if front.x_forwarded {
        out.extend_from_slice(b"x-forwarded-for: ");
        if let Some(prev) = xff {
            out.extend_from_slice(prev);
            out.extend_from_slice(b", ");
        }
        // Formatted straight into the head: no string per request.
        let _ = write!(out, "{}", peer.ip());
        out.extend_from_slice(if front.https {
            b"\r\nx-forwarded-proto: https\r\n"
        } else {
            b"\r\nx-forwarded-proto: http\r\n"
        });
    }
    if front.forwarded {
        // RFC 7239: an IPv6 address is quoted and bracketed.
        let proto = if front.https { "https" } else { "http" };
        let _ = match peer.ip() {
            std::net::IpAddr::V4(ip) => write!(out, "forwarded: for={ip};proto={proto}\r\n"),
            std::net::IpAddr::V6(ip) => {
                write!(out, "forwarded: for=\"[{ip}]\";proto={proto}\r\n")
            }
        };
    }
}

/// A WebSocket handshake: GET, HTTP/1.1, no body, `Connection: upgrade` and
/// `Upgrade: websocket`.
fn is_websocket(
    head: &codec::Head<'_>,
    headers: &[httparse::Header<'_>],
    named: &Named<'_>,
) -> bool {
    head.method == "GET"
        && head.minor == 1
        && head.framing == Framing::None
        && named.iter().any(|t| t.eq_ignore_ascii_case("upgrade"))
        && headers.iter().any(|h| {
            h.name.eq_ignore_ascii_case("upgrade")
                && std::str::from_utf8(h.value).is_ok_and(|v| {
                    v.split(',')
                        .any(|t| t.trim().eq_ignore_ascii_case("websocket"))
                })
        })
}

/// What cookie persistence adds to a response.
#[derive(Debug, Clone, Copy, Default)]
pub enum CookieOut<'a> {
    #[default]
    None,
    /// Set `name=value` and `attrs` (the client had no valid cookie for this server).
    Insert {
        name: &'a str,
        value: &'a str,
        nocache: bool,
        attrs: &'a str,
    },
    /// Prefix the server's own `name` cookie with `value~`.
    Prefix { name: &'a str, value: &'a str },
}

/// Everything the response head gets besides the server's fields.
#[derive(Debug, Clone, Copy)]
pub struct RespEdits<'a> {
    pub ops: Ops<'a>,
    pub cookie: CookieOut<'a>,
}

/// Re-serialise a response head: status line, headers minus hop-by-hop and
/// framing fields, the edits, the framing fields `resp` declared (none for 1xx
/// and 204, which never carry them), and `connection: close` when the client
/// connection ends after it. `body`: how many body bytes the caller appends
/// (capacity is reserved for them).
pub fn response(
    raw: &[u8],
    headers: &[httparse::Header<'_>],
    resp: &RespHead,
    close: bool,
    edits: RespEdits<'_>,
    body: usize,
) -> Vec<u8> {
    let status = resp.status;
    let named = connection_tokens(headers);
    // Room for what is usually added, and for `body` bytes sent with the head.
    let mut out = Vec::with_capacity(raw.len() + 64 + body);
    status_line(&mut out, raw, status);
    let private = make_private(headers, edits.cookie);
    // Framing fields: the declared ones, where the first one was (none for 1xx
    // and 204, which never carry them).
    let mut framing_due = !((100..200).contains(&status) || status == 204);
    for h in headers {
        if framing_due && is_framing_field(h.name) {
            resp.declared.write(&mut out);
            framing_due = false;
        }
        if is_hop(h.name, &named) {
            continue;
        }
        if !edits.ops.is_empty() && removed(h.name, edits.ops) {
            continue;
        }
        if private && h.name.eq_ignore_ascii_case("cache-control") {
            continue;
        }
        if let CookieOut::Prefix { name, value } = edits.cookie
            && h.name.eq_ignore_ascii_case("set-cookie")
        {
            let mark = out.len();
            out.extend_from_slice(b"set-cookie: ");
            if prefix_set_cookie(h.value, name, value, &mut out) {
                out.extend_from_slice(b"\r\n");
                continue;
            }
            out.truncate(mark);
        }
        push_field(&mut out, h.name.as_bytes(), h.value);
    }
    push_added(&mut out, edits.ops);
    if let CookieOut::Insert {
        name, value, attrs, ..
    } = edits.cookie
    {
        let _ = write!(out, "set-cookie: {name}={value}{attrs}\r\n");
        if private {
            out.extend_from_slice(b"cache-control: private\r\n");
        }
    }
    if framing_due {
        resp.declared.write(&mut out);
    }
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// The status line: our version, the server's status and reason phrase
/// (validated by httparse).
fn status_line(out: &mut Vec<u8>, raw: &[u8], status: u16) {
    let line_end = raw
        .windows(2)
        .position(|w| w == b"\r\n")
        .unwrap_or(raw.len());
    let reason = raw[..line_end]
        .splitn(3, |&b| b == b' ')
        .nth(2)
        .unwrap_or(b"");
    let _ = write!(out, "HTTP/1.1 {status} ");
    out.extend_from_slice(reason);
    out.extend_from_slice(b"\r\n");
}

/// nocache: a response that sets the persistence cookie must not be cached
/// by a shared cache, unless the server already said so.
fn make_private(headers: &[httparse::Header<'_>], cookie: CookieOut<'_>) -> bool {
    match cookie {
        CookieOut::Insert { nocache: true, .. } => !headers.iter().any(|h| {
            h.name.eq_ignore_ascii_case("cache-control")
                && std::str::from_utf8(h.value).is_ok_and(|v| {
                    let v = v.to_ascii_lowercase();
                    v.contains("private") || v.contains("no-cache") || v.contains("no-store")
                })
        }),
        _ => false,
    }
}

/// The framing a serialised request head declares, by the strict parser (debug
/// assertions and tests).
pub fn reparse_request(out: &[u8]) -> Option<(Framing, Declared)> {
    let mut headers = vec![httparse::EMPTY_HEADER; 1000];
    let limits = codec::Limits {
        max_head: usize::MAX,
        max_headers: 1000,
    };
    match codec::parse_request(out, &mut headers, &limits) {
        Ok(Some(h)) if h.len == out.len() => Some((h.framing, h.declared)),
        _ => None,
    }
}

/// The framing a serialised response head declares, by the strict parser.
pub fn reparse_response(out: &[u8], head_request: bool) -> Option<(RespFraming, Declared)> {
    let mut headers = vec![httparse::EMPTY_HEADER; 1000];
    match super::response::parse_response(out, &mut headers, head_request, usize::MAX) {
        Ok(Some(r)) if r.len == out.len() => Some((r.framing, r.declared)),
        _ => None,
    }
}

#[cfg(test)]
#[path = "rewrite_tests.rs"]
mod tests;
