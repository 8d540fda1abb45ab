//! Phase 1 of an exchange, synchronous: parse the request head (strict
//! codec), normalise its path, apply the per-source request rate, run the
//! frontend's rules, look up persistence, and build the head that goes
//! upstream — or the answer fulcrum gives itself (deny, redirect, 429).
//! Synchronous so the header array lives on the stack only here, not in the
//! exchange's future.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::time::Instant;

use crate::config::routing::{CookieMode, Persist};
use crate::connect::{self, Pin};
use crate::l7::codec::{self, Framing, HeadError};
use crate::l7::path::{self, PathMode};
use crate::l7::persist::CookieEdit;
use crate::l7::reply::{canned, strip_body};
use crate::l7::rewrite::{self, CookieOut, Forwarding, Req};
use crate::rules::acl::ReqView;
use crate::rules::{self, Route};
use crate::runtime::{BackendRt, FrontendRt};
use crate::server::Server;

/// Who is asking: the client (after the PROXY header), where it connected, and
/// whether its requests count against `req_rate_per_source`.
#[derive(Debug, Clone, Copy)]
pub struct Peer {
    pub client: SocketAddr,
    pub local: SocketAddr,
    pub rate_limited: bool,
}

/// A request routed to a backend, with its persistence lookup done.
pub struct Routed<'r> {
    pub req: Req,
    pub backend: &'r BackendRt,
    /// The server the request's cookie or source entry names.
    pub pin: Pin<'r>,
    pub response_ops: rules::Ops<'r>,
}

/// What the rules made of a request head.
pub enum Parsed<'r> {
    Forward(Routed<'r>),
    /// fulcrum answers itself (deny, redirect, 429).
    Answer(Said),
}

/// An answer fulcrum gives itself, and what the access log says of it.
pub struct Said {
    pub msg: Vec<u8>,
    pub status: u16,
    pub close: bool,
    /// The termination state (`trace.rs`): `PR` refused, `LR` redirected.
    pub term: [u8; 2],
    pub method: String,
    pub host: String,
    pub path: String,
    pub head_len: usize,
}

/// Parse and route a request head at the start of `cbuf`, consuming it; `None`
/// while it is incomplete.
pub fn request_step<'r>(
    cbuf: &mut Vec<u8>,
    peer: Peer,
    tls: Option<&crate::net::tls::TlsInfo>,
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
    let match_only = normalize(&mut head, front)?;
    let n = headers
        .iter()
        .position(|h| h.name.is_empty())
        .unwrap_or(headers.len());
    let parsed = match rate_limit(&head, peer, front) {
        Some(answer) => answer,
        None => route(
            &head,
            &headers[..n],
            (peer, tls),
            front,
            backends,
            match_only,
        ),
    };
    let len = head.len;
    cbuf.drain(..len);
    Ok(Some(parsed))
}

/// One path for the ACLs, the balancer and (by default) the origin: in
/// `forward` mode the head's path becomes the normal one; in `match-only` the
/// normal path is returned for routing and the head keeps the client's.
fn normalize(head: &mut codec::Head<'_>, front: &FrontendRt) -> Result<Option<String>, HeadError> {
    let normalized = match path::normalize(&head.path, &front.path) {
        Ok(Cow::Borrowed(_)) => None,
        Ok(Cow::Owned(p)) => Some(p),
        Err(e) => return Err(HeadError::BadPath(e)),
    };
    Ok(match normalized {
        Some(p) if front.path.mode == PathMode::Forward => {
            head.path = Cow::Owned(p);
            None
        }
        other => other,
    })
}

/// An answer fulcrum gives itself; a body that was not read cannot be skipped
/// safely, so the connection closes after it then.
fn answer<'r>(
    head: &codec::Head<'_>,
    front: &FrontendRt,
    status: u16,
    extra: &str,
    body: Option<&[u8]>,
) -> Parsed<'r> {
    let close = head.close || head.framing != Framing::None;
    let mut msg = canned(front, status, extra, body, close);
    if head.method == "HEAD" {
        strip_body(&mut msg);
    }
    let term = if (300..400).contains(&status) {
        *b"LR"
    } else {
        *b"PR"
    };
    Parsed::Answer(Said {
        msg,
        status,
        close,
        term,
        method: head.method.to_string(),
        host: head.authority.unwrap_or_default().to_string(),
        path: head.path.to_string(),
        head_len: head.len,
    })
}

/// The 429 for a request over its source's `req_rate_per_source`, if it is.
fn rate_limit<'r>(head: &codec::Head<'_>, peer: Peer, front: &FrontendRt) -> Option<Parsed<'r>> {
    let limiter = front.source_limits.as_ref().filter(|_| peer.rate_limited)?;
    let wait = limiter.request(peer.client.ip(), Instant::now()).err()?;
    front.counters.limit_req_rate.inc();
    let extra = format!("retry-after: {wait}\r\n");
    Some(answer(head, front, 429, &extra, None))
}

/// Run the frontend's rules on a parsed head, then the chosen backend's
/// persistence lookup, and build what goes upstream.
fn route<'r>(
    head: &codec::Head<'_>,
    headers: &[httparse::Header<'_>],
    (peer, tls): (Peer, Option<&crate::net::tls::TlsInfo>),
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
        src: peer.client.ip(),
        dst_port: peer.local.port(),
        tls,
    };
    let draw = crate::net::rand::fastrand_u64();
    let d = rules::decide(&front.rules, &front.acls, &view, front.backend, draw);
    let b = match d.route {
        Route::Backend(b) => b,
        Route::Deny { status, body } => {
            front.counters.http_denied.inc();
            return answer(head, front, status, "", body.map(|b| &b[..]));
        }
        Route::Redirect { status, location } => {
            front.counters.http_redirected.inc();
            return answer(
                head,
                front,
                status,
                &format!("location: {location}\r\n"),
                None,
            );
        }
    };
    let Some(backend) = backends.get(b) else {
        return answer(head, front, 503, "", None);
    };
    let (pin, edit) = pin(backend, &view);
    let fwd = Forwarding {
        x_forwarded: front.x_forwarded,
        forwarded: front.forwarded,
        https: tls.is_some(),
        request_id: front
            .request_id
            .as_deref()
            .map(|name| (name, crate::net::rand::fastrand_u64() | 1)),
    };
    let mut req = rewrite::request(head, headers, peer.client, fwd, d.request_ops, edit);
    req.route_path = match_only.map(String::into_boxed_str);
    Parsed::Forward(Routed {
        req,
        backend,
        pin,
        response_ops: d.response_ops,
    })
}

/// The server a request is pinned to by the backend's persistence, and how the
/// persistence cookie is forwarded.
fn pin<'r>(backend: &'r BackendRt, view: &ReqView<'_>) -> (Pin<'r>, CookieEdit<'r>) {
    let Some(Persist::Cookie {
        name,
        mode,
        indirect,
        ..
    }) = &backend.persist
    else {
        return (
            connect::source_pin(backend, view.src, Instant::now()),
            CookieEdit::Keep,
        );
    };
    let Some(value) = view.cookie(name) else {
        return (Pin::default(), CookieEdit::Keep);
    };
    let (key, edit) = match mode {
        CookieMode::Insert if *indirect => (Some(value), CookieEdit::Remove(name)),
        CookieMode::Insert => (Some(value), CookieEdit::Keep),
        CookieMode::Prefix => (
            value.split_once('~').map(|(k, _)| k),
            CookieEdit::Unprefix(name),
        ),
    };
    let pin = match key {
        // A value naming no server, or one in maintenance or down, is ignored.
        Some(k) => Pin {
            server: backend.by_cookie(k).filter(|s| s.takes_persistent()),
            named: true,
        },
        None => Pin::default(),
    };
    (pin, edit)
}

/// After the pick: count a persistence hit or miss (on the first attempt),
/// remember the source, and say which cookie the response carries.
pub fn after_pick<'r>(
    backend: &'r BackendRt,
    server: &'r Server,
    pin: Pin<'_>,
    first_attempt: bool,
    client: SocketAddr,
) -> CookieOut<'r> {
    let counted = if first_attempt {
        pin
    } else {
        Pin {
            named: false,
            ..pin
        }
    };
    connect::after_pick(backend, counted, server, client.ip(), Instant::now());
    let same = pin
        .server
        .is_some_and(|p| std::sync::Arc::ptr_eq(&p.state, &server.state));
    match &backend.persist {
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
        _ => CookieOut::None,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::runtime::Runtime;

    fn runtime(extra: &str) -> Runtime {
        let text = format!(
            r#"
[[frontend]]
name = "f"
listen = ["127.0.0.1:1"]
mode = "http"
default_backend = "b"
{extra}

[[backend]]
name = "b"
servers = [{{ name = "s", address = "127.0.0.1:2" }}]
"#
        );
        let cfg = crate::config::parse("t.toml", &text).unwrap();
        Runtime::build(Arc::new(cfg), None, 1)
    }

    const PEER: Peer = Peer {
        client: SocketAddr::new(
            std::net::IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1)),
            4000,
        ),
        local: SocketAddr::new(
            std::net::IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 1)),
            80,
        ),
        rate_limited: true,
    };

    fn step<'r>(rt: &'r Runtime, raw: &[u8]) -> (Result<Option<Parsed<'r>>, HeadError>, Vec<u8>) {
        let mut buf = raw.to_vec();
        let r = request_step(&mut buf, PEER, None, &rt.frontends[0], &rt.backends);
        (r, buf)
    }

    fn head_of(p: &Parsed<'_>) -> String {
        match p {
            Parsed::Forward(r) => String::from_utf8_lossy(&r.req.upstream_head).into_owned(),
            Parsed::Answer(said) => String::from_utf8_lossy(&said.msg).into_owned(),
        }
    }

    #[test]
    fn a_request_is_consumed_normalised_and_routed() {
        let rt = runtime("");
        let (r, rest) = step(&rt, b"GET //a/./b HTTP/1.1\r\nHost: x\r\n\r\nGET /next");
        let parsed = r.unwrap().unwrap();
        assert!(head_of(&parsed).starts_with("GET /a/b HTTP/1.1\r\nhost: x\r\n"));
        assert_eq!(rest, b"GET /next", "the next pipelined bytes stay");
        let (r, rest) = step(&rt, b"GET / HTTP/1.1\r\nHo");
        assert!(matches!(r, Ok(None)));
        assert_eq!(
            rest, b"GET / HTTP/1.1\r\nHo",
            "an incomplete head is left as it is"
        );
        let (r, _) = step(&rt, b"GET /a%2fb HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(matches!(r, Err(HeadError::BadPath(_))));
    }

    #[test]
    fn match_only_routes_on_the_normal_path_and_keeps_the_clients() {
        let rt = runtime("path_normalize = \"match-only\"");
        let (r, _) = step(&rt, b"GET /x/../y HTTP/1.1\r\nHost: x\r\n\r\n");
        let Some(Parsed::Forward(routed)) = r.unwrap() else {
            panic!("forwarded")
        };
        assert_eq!(routed.req.path(), "/y");
        assert!(
            routed
                .req
                .upstream_head
                .starts_with(b"GET /x/../y HTTP/1.1\r\n")
        );
    }

    #[test]
    fn answers_deny_and_rate_limit_and_keep_the_connection_when_they_can() {
        let rt = runtime(
            "acl.a = { path_prefix = \"/admin\" }\nrules = [{ deny = 403, if = \"a\" }]\nlimits = { req_rate_per_source = \"2/m\" }",
        );
        let (r, _) = step(&rt, b"GET /admin HTTP/1.1\r\nHost: x\r\n\r\n");
        let p = r.unwrap().unwrap();
        let text = head_of(&p);
        assert!(
            text.starts_with("HTTP/1.1 403 Forbidden\r\n") && text.ends_with("403 Forbidden\n"),
            "{text}"
        );
        assert!(matches!(
            p,
            Parsed::Answer(Said {
                close: false,
                term: [b'P', b'R'],
                ..
            })
        ));
        // HEAD: the length, no body.
        let (r, _) = step(&rt, b"HEAD /admin HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(head_of(&r.unwrap().unwrap()).ends_with("\r\n\r\n"));
        // The third request of this source within the minute: 429, and a body
        // left unread closes the connection.
        let (r, _) = step(
            &rt,
            b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc",
        );
        let p = r.unwrap().unwrap();
        assert!(
            head_of(&p).contains("429 Too Many Requests\r\nretry-after: 30\r\n"),
            "{}",
            head_of(&p)
        );
        assert!(matches!(
            p,
            Parsed::Answer(Said {
                status: 429,
                close: true,
                ..
            })
        ));
    }
}
