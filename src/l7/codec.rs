//! Strict HTTP/1.1 request heads (RFC 9112) on top of httparse: httparse tokenises,
//! this module decides whether the head is acceptable and how the body is framed.
//! Never repairs by guessing: anything ambiguous is an error with its own class,
//! status and counter name. Pure: bytes in, a decision out.

use std::borrow::Cow;

use super::framing::{Declared, TeError, TeList, connection_field};

pub use crate::config::HeadLimits as Limits;

/// How the request body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    None,
    Length(u64),
    Chunked,
}

/// One reason to reject a request head.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    #[error("bare CR or LF in the request head")]
    BareCrLf,
    #[error("malformed request line or header")]
    Malformed,
    #[error("invalid character in a header value")]
    BadValue,
    #[error("unsupported HTTP version")]
    Version,
    #[error("request line too long")]
    UriTooLong,
    #[error("request head too large")]
    HeadTooLarge,
    #[error("too many header fields")]
    TooManyHeaders,
    #[error("both Content-Length and Transfer-Encoding")]
    ClAndTe,
    #[error("invalid or conflicting Content-Length")]
    BadContentLength,
    #[error("invalid Transfer-Encoding")]
    BadTransferEncoding,
    #[error("Transfer-Encoding in an HTTP/1.0 request")]
    TeInHttp10,
    #[error("unsupported transfer coding")]
    UnknownCoding,
    #[error("missing Host")]
    MissingHost,
    #[error("more than one Host")]
    DuplicateHost,
    #[error("invalid Host or authority")]
    BadHost,
    #[error("unsupported request target form")]
    BadTarget,
    #[error("unsupported expectation")]
    BadExpect,
    #[error("Connection names a framing or routing field")]
    ConnectionFraming,
    #[error("refused path: {0}")]
    BadPath(super::path::PathError),
}

impl HeadError {
    /// The status sent to the client (the connection is closed after it).
    pub fn status(self) -> u16 {
        match self {
            HeadError::UriTooLong => 414,
            HeadError::HeadTooLarge | HeadError::TooManyHeaders => 431,
            HeadError::UnknownCoding => 501,
            HeadError::Version => 505,
            HeadError::BadExpect => 417,
            _ => 400,
        }
    }

    /// Index of this class in `stats::HTTP_REJECT_CLASSES` (whose names are
    /// the counters'): one exhaustive match, so a new class cannot be counted
    /// as another by accident.
    pub fn class(self) -> usize {
        match self {
            HeadError::BareCrLf => 0,
            HeadError::Malformed => 1,
            HeadError::BadValue => 2,
            HeadError::Version => 3,
            HeadError::UriTooLong => 4,
            HeadError::HeadTooLarge => 5,
            HeadError::TooManyHeaders => 6,
            HeadError::ClAndTe => 7,
            HeadError::BadContentLength => 8,
            HeadError::BadTransferEncoding => 9,
            HeadError::TeInHttp10 => 10,
            HeadError::UnknownCoding => 11,
            HeadError::MissingHost => 12,
            HeadError::DuplicateHost => 13,
            HeadError::BadHost => 14,
            HeadError::BadTarget => 15,
            HeadError::BadExpect => 16,
            HeadError::ConnectionFraming => 17,
            HeadError::BadPath(_) => 18,
        }
    }

    /// The counter this rejection bumps (one per class).
    pub fn counter(self) -> &'static str {
        crate::stats::HTTP_REJECT_CLASSES[self.class()]
    }
}

/// What the proxy needs to know about an accepted request head. Borrowed from the
/// input buffer; header values stay in httparse's slice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head<'b> {
    pub method: &'b str,
    /// Path and query in origin form (`/p?q`), or `*` for `OPTIONS *`. Owned
    /// only when fulcrum had to change it (`http://h?q` becomes `/?q`).
    pub path: Cow<'b, str>,
    /// The authority requests are routed on: from an absolute-form target if there
    /// is one (it replaces Host), else the Host header. Lowercase is not applied.
    pub authority: Option<&'b str>,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor: u8,
    pub framing: Framing,
    /// The framing fields as declared (what the forwarded head carries).
    pub declared: Declared,
    /// The client asked to close (or HTTP/1.0 without keep-alive).
    pub close: bool,
    pub expect_continue: bool,
    /// Length of the head in bytes (where the body starts).
    pub len: usize,
}

/// Parse and check a request head at the start of `buf`. `Ok(None)`: incomplete,
/// read more (unless `buf` already exceeds the limits, which is an error).
pub fn parse_request<'b>(
    buf: &'b [u8],
    headers: &mut [httparse::Header<'b>],
    limits: &Limits,
) -> Result<Option<Head<'b>>, HeadError> {
    let Some(end) = request_head_end(buf, limits)? else {
        return Ok(None);
    };
    let max = limits.max_headers.min(headers.len());
    let mut req = httparse::Request::new(&mut headers[..max]);
    let len = match req.parse(&buf[..end]) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Err(HeadError::Malformed),
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooManyHeaders),
        Err(httparse::Error::Version) => return Err(HeadError::Version),
        Err(_) => return Err(HeadError::Malformed),
    };
    let method = req.method.ok_or(HeadError::Malformed)?;
    let target = req.path.ok_or(HeadError::Malformed)?;
    let minor = req.version.ok_or(HeadError::Version)?;
    if minor > 1 {
        return Err(HeadError::Version);
    }
    let fields = Fields::scan(req.headers, minor)?;
    let (framing, declared) = fields.framing()?;
    let (path, authority) = split_target(method, target)?;
    let authority = effective_authority(authority, fields.host, minor)?;
    Ok(Some(Head {
        method,
        path,
        authority,
        minor,
        framing,
        declared,
        close: fields.close,
        expect_continue: fields.expect_continue,
        len,
    }))
}

/// Where the request head in `buf` ends, within the limits: `Ok(None)` while
/// incomplete. Line endings are checked first: httparse accepts bare LF, we
/// do not.
fn request_head_end(buf: &[u8], limits: &Limits) -> Result<Option<usize>, HeadError> {
    let end = head_end(buf, true).map_err(|()| HeadError::BareCrLf)?;
    let too_big = || {
        // 414 when the request line alone is over the limit, else 431.
        let line = buf
            .windows(2)
            .position(|w| w == b"\r\n")
            .unwrap_or(buf.len());
        if line > limits.max_head {
            HeadError::UriTooLong
        } else {
            HeadError::HeadTooLarge
        }
    };
    match end {
        None if buf.len() > limits.max_head => Err(too_big()),
        Some(end) if end > limits.max_head => Err(too_big()),
        end => Ok(end),
    }
}

/// The request header fields the codec acts on, checked as they are read.
#[derive(Default)]
struct Fields<'b> {
    content_length: Option<u64>,
    te_seen: bool,
    te: TeList,
    host: Option<&'b str>,
    close: bool,
    expect_continue: bool,
}

impl<'b> Fields<'b> {
    fn scan(headers: &[httparse::Header<'b>], minor: u8) -> Result<Fields<'b>, HeadError> {
        let mut f = Fields {
            close: minor == 0,
            ..Fields::default()
        };
        for h in headers {
            if h.value
                .iter()
                .any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f)
            {
                return Err(HeadError::BadValue);
            }
            let value = std::str::from_utf8(h.value).map_err(|_| HeadError::BadValue)?;
            f.field(h.name, value, minor)?;
        }
        Ok(f)
    }

    fn field(&mut self, name: &str, value: &'b str, minor: u8) -> Result<(), HeadError> {
        if name.eq_ignore_ascii_case("content-length") {
            let n = self::content_length(value).ok_or(HeadError::BadContentLength)?;
            if self.content_length.is_some_and(|c| c != n) {
                return Err(HeadError::BadContentLength);
            }
            self.content_length = Some(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            if minor == 0 {
                return Err(HeadError::TeInHttp10);
            }
            self.te_seen = true;
            self.te.add(value).map_err(|e| match e {
                TeError::Malformed => HeadError::BadTransferEncoding,
                TeError::Unknown => HeadError::UnknownCoding,
            })?;
        } else if name.eq_ignore_ascii_case("host") {
            if self.host.is_some() {
                return Err(HeadError::DuplicateHost);
            }
            self.host = Some(value.trim_matches([' ', '\t']));
        } else if name.eq_ignore_ascii_case("connection") {
            connection_field(value, minor, &mut self.close)
                .map_err(|_| HeadError::ConnectionFraming)?;
        } else if name.eq_ignore_ascii_case("expect") {
            if !value
                .trim_matches([' ', '\t'])
                .eq_ignore_ascii_case("100-continue")
            {
                return Err(HeadError::BadExpect);
            }
            self.expect_continue = minor == 1;
        }
        Ok(())
    }

    /// How the body is framed: chunked when a transfer coding is declared
    /// (never together with a length), else by Content-Length.
    fn framing(&self) -> Result<(Framing, Declared), HeadError> {
        if self.te_seen && self.content_length.is_some() {
            return Err(HeadError::ClAndTe);
        }
        if self.te_seen && !self.te.chunked {
            // A request body must be chunked last, or its end cannot be known.
            return Err(HeadError::BadTransferEncoding);
        }
        Ok(if self.te_seen {
            (Framing::Chunked, Declared::Codings(self.te))
        } else {
            match self.content_length {
                None => (Framing::None, Declared::Nothing),
                Some(0) => (Framing::None, Declared::Length(0)),
                Some(n) => (Framing::Length(n), Declared::Length(n)),
            }
        })
    }
}

/// The request's authority: the target's (absolute form), else Host; both
/// must be valid, and HTTP/1.1 requires Host.
fn effective_authority<'b>(
    target: Option<&'b str>,
    host: Option<&'b str>,
    minor: u8,
) -> Result<Option<&'b str>, HeadError> {
    if host.is_some_and(|h| !valid_authority(h)) || target.is_some_and(|a| !valid_authority(a)) {
        return Err(HeadError::BadHost);
    }
    if minor == 1 && host.is_none() {
        return Err(HeadError::MissingHost);
    }
    Ok(target.or(host))
}

/// The end of a head (just past the empty line), checking that every line ends in
/// CRLF: `Err` on a bare CR or LF, `Ok(None)` while incomplete. With
/// `skip_leading`, empty lines before the first line are ignored (RFC 9112 §2.2,
/// requests only).
pub(crate) fn head_end(buf: &[u8], skip_leading: bool) -> Result<Option<usize>, ()> {
    let mut i = 0;
    while skip_leading && buf[i..].starts_with(b"\r\n") {
        i += 2;
    }
    let first = i;
    let mut line_start = i;
    while i < buf.len() {
        match buf[i] {
            b'\n' => return Err(()),
            b'\r' => match buf.get(i + 1) {
                None => return Ok(None),
                Some(b'\n') => {
                    if i == line_start && line_start > first {
                        return Ok(Some(i + 2));
                    }
                    i += 2;
                    line_start = i;
                    continue;
                }
                Some(_) => return Err(()),
            },
            _ => {}
        }
        i += 1;
    }
    Ok(None)
}

/// A Content-Length value: digits only (surrounding blanks allowed), at most 19.
pub(crate) fn content_length(value: &str) -> Option<u64> {
    let v = value.trim_matches([' ', '\t']);
    if v.is_empty() || v.len() > 19 || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    v.parse().ok()
}

/// Origin-form passes; absolute-form yields its authority (which replaces Host)
/// and the path; `*` only with OPTIONS; authority-form (CONNECT) is not proxied.
fn split_target<'b>(
    method: &str,
    target: &'b str,
) -> Result<(Cow<'b, str>, Option<&'b str>), HeadError> {
    if target.starts_with('/') {
        return Ok((Cow::Borrowed(target), None));
    }
    if target == "*" && method == "OPTIONS" {
        return Ok((Cow::Borrowed(target), None));
    }
    let lower_scheme = |s: &str| {
        target
            .get(..s.len())
            .is_some_and(|p| p.eq_ignore_ascii_case(s))
    };
    let rest = if lower_scheme("http://") {
        &target[7..]
    } else if lower_scheme("https://") {
        &target[8..]
    } else {
        return Err(HeadError::BadTarget);
    };
    let cut = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(cut);
    if authority.is_empty() || authority.contains('@') {
        return Err(HeadError::BadHost);
    }
    // `http://a?x` has the path "" and a query: forward it as "/?x" (an empty
    // path is "/" in origin form, RFC 9112 §3.2.1).
    let path = if path.is_empty() {
        Cow::Borrowed("/")
    } else if path.starts_with('?') {
        Cow::Owned(format!("/{path}"))
    } else {
        Cow::Borrowed(path)
    };
    Ok((path, Some(authority)))
}

/// `host [":" port]` with host a reg-name, IPv4 or `[IPv6]` literal.
pub fn valid_authority(a: &str) -> bool {
    let (host, port): (&str, Option<&str>) = if let Some(rest) = a.strip_prefix('[') {
        let Some(close) = rest.find(']') else {
            return false;
        };
        if rest[..close].parse::<std::net::Ipv6Addr>().is_err() {
            return false;
        }
        match &rest[close + 1..] {
            "" => ("v6", None),
            p => match p.strip_prefix(':') {
                Some(p) => ("v6", Some(p)),
                None => return false,
            },
        }
    } else {
        match a.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (a, None),
        }
    };
    let host_ok = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=%".contains(&b));
    let port_ok =
        port.is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()));
    host_ok && port_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(raw: &[u8]) -> Result<Option<Head<'_>>, HeadError> {
        let mut headers = [httparse::EMPTY_HEADER; 128];
        let h = parse_request(raw, &mut headers, &Limits::default())?;
        // Detach from the local header array for the caller.
        Ok(h.map(|h| Head { ..h }))
    }

    #[test]
    fn accepts_ordinary_requests() {
        let h = parse(b"GET /a?b=1 HTTP/1.1\r\nHost: example.com\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(
            (h.method, h.path.as_ref(), h.authority, h.minor),
            ("GET", "/a?b=1", Some("example.com"), 1)
        );
        assert_eq!((h.framing, h.close, h.len), (Framing::None, false, 42));
        let h = parse(b"POST /u HTTP/1.1\r\nHost: a:8080\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello")
            .unwrap()
            .unwrap();
        assert_eq!((h.framing, h.close), (Framing::Length(5), true));
        let h = parse(b"POST /u HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(h.framing, Framing::Chunked);
        let h = parse(b"GET / HTTP/1.0\r\n\r\n").unwrap().unwrap();
        assert_eq!((h.minor, h.close, h.authority), (0, true, None));
        let h = parse(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(!h.close);
        let h = parse(b"\r\nGET / HTTP/1.1\r\nHost: [::1]:80\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(
            h.framing,
            Framing::Length(5),
            "identical duplicates collapse"
        );
        let h = parse(
            b"PUT /x HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n",
        )
        .unwrap()
        .unwrap();
        assert!(h.expect_continue);
    }

    #[test]
    fn absolute_form_authority_replaces_host() {
        let h = parse(b"GET http://Evil.example:81/p?q HTTP/1.1\r\nHost: good.example\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(
            (h.path.as_ref(), h.authority),
            ("/p?q", Some("Evil.example:81"))
        );
        let h = parse(b"GET http://a.example HTTP/1.1\r\nHost: a.example\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(h.path, "/");
        let h = parse(b"GET http://a.example?x=1 HTTP/1.1\r\nHost: a.example\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!((h.path.as_ref(), h.authority), ("/?x=1", Some("a.example")));
    }

    #[test]
    fn incomplete_until_the_empty_line() {
        let full = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
        for cut in 0..full.len() {
            assert_eq!(parse(&full[..cut]), Ok(None), "cut {cut}");
        }
    }

    #[test]
    fn rejects_each_class() {
        use HeadError::*;
        let cases: &[(&[u8], HeadError)] = &[
            (b"GET / HTTP/1.1\nHost: a\n\n", BareCrLf),
            (b"GET / HTTP/1.1\r\nHost: a\n\r\n", BareCrLf),
            (b"GET / HTTP/1.1\r\nHost: a\rX: b\r\n\r\n", BareCrLf),
            (b"GET / HTTP/1.1\r\nHost : a\r\n\r\n", Malformed),
            (b"GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n", Malformed),
            (b"GET / HTTP/1.1\r\n Host: a\r\n\r\n", Malformed),
            (b"GET /\r\n\r\n", Malformed),
            (b"GET / HTTP/1.2\r\nHost: a\r\n\r\n", Version),
            (b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", Version),
            (b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x7fb\r\n\r\n", Malformed),
            (b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x01b\r\n\r\n", Malformed),
            (b"GET / HTTP/1.1\r\nHost: a\r\nX: a\xffb\r\n\r\n", BadValue),
            (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", ClAndTe),
            (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", BadContentLength),
            (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\n", BadContentLength),
            (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x5\r\n\r\n", BadContentLength),
            (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5 5\r\n\r\n", BadContentLength),
            (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length:\r\n\r\n", BadContentLength),
            (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999\r\n\r\n", BadContentLength),
            (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", BadTransferEncoding),
            (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", BadTransferEncoding),
            (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", BadTransferEncoding),
            (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: ,chunked\r\n\r\n", BadTransferEncoding),
            (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked;x=y\r\n\r\n", BadTransferEncoding),
            (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n", UnknownCoding),
            (b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", TeInHttp10),
            (b"GET / HTTP/1.1\r\n\r\n", MissingHost),
            (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", DuplicateHost),
            (b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n", BadHost),
            (b"GET / HTTP/1.1\r\nHost: a:x\r\n\r\n", BadHost),
            (b"GET / HTTP/1.1\r\nHost: [zz]\r\n\r\n", BadHost),
            (b"GET / HTTP/1.1\r\nHost: \r\n\r\n", BadHost),
            (b"GET http://u@evil/ HTTP/1.1\r\nHost: a\r\n\r\n", BadHost),
            (b"CONNECT a:443 HTTP/1.1\r\nHost: a\r\n\r\n", BadTarget),
            (b"GET * HTTP/1.1\r\nHost: a\r\n\r\n", BadTarget),
            (b"GET / HTTP/1.1\r\nHost: a\r\nExpect: 200-ok\r\n\r\n", BadExpect),
            (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nConnection: close, Content-Length\r\n\r\n", ConnectionFraming),
            (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: keep-alive, transfer-encoding\r\n\r\n", ConnectionFraming),
            (b"GET / HTTP/1.1\r\nHost: a\r\nConnection: HOST\r\n\r\n", ConnectionFraming),
            (b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\nConnection: x, content-length\r\n\r\n", ConnectionFraming),
            (b"GET / HTTP/1.0\r\nConnection: Content-Length\r\n\r\n", ConnectionFraming),
        ];
        for (raw, err) in cases {
            assert_eq!(
                parse(raw).map(|_| ()),
                Err(*err),
                "{}",
                String::from_utf8_lossy(raw)
            );
        }
    }

    #[test]
    fn every_class_has_its_own_counter() {
        use super::super::path::PathError;
        use HeadError::*;
        let all = [
            BareCrLf,
            Malformed,
            BadValue,
            Version,
            UriTooLong,
            HeadTooLarge,
            TooManyHeaders,
            ClAndTe,
            BadContentLength,
            BadTransferEncoding,
            TeInHttp10,
            UnknownCoding,
            MissingHost,
            DuplicateHost,
            BadHost,
            BadTarget,
            BadExpect,
            ConnectionFraming,
            BadPath(PathError::EncodedSlash),
        ];
        assert_eq!(all.len(), crate::stats::HTTP_REJECT_CLASSES.len());
        let mut seen: Vec<usize> = all.iter().map(|e| e.class()).collect();
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), all.len(), "two classes share a counter");
        assert_eq!(BadPath(PathError::PathParams).counter(), "bad_path");
        assert_eq!(ConnectionFraming.counter(), "connection_framing");
    }

    #[test]
    fn limits() {
        let long_line = [b"GET /".as_slice(), &[b'a'; 20_000]].concat();
        assert_eq!(parse(&long_line).map(|_| ()), Err(HeadError::UriTooLong));
        let mut many = b"GET / HTTP/1.1\r\nHost: a\r\n".to_vec();
        for i in 0..120 {
            many.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert_eq!(parse(&many).map(|_| ()), Err(HeadError::TooManyHeaders));
        let mut big = b"GET / HTTP/1.1\r\nHost: a\r\n".to_vec();
        for _ in 0..40 {
            big.extend_from_slice(format!("X-Big: {}\r\n", "v".repeat(500)).as_bytes());
        }
        assert_eq!(parse(&big).map(|_| ()), Err(HeadError::HeadTooLarge));
        assert_eq!(HeadError::HeadTooLarge.status(), 431);
    }

    #[test]
    fn authorities() {
        for ok in [
            "a",
            "a.example",
            "a:80",
            "10.0.0.1:8080",
            "[::1]",
            "[::1]:443",
            "xn--bcher-kva.example",
        ] {
            assert!(valid_authority(ok), "{ok}");
        }
        for bad in [
            "", ":80", "a:", "a:123456", "a b", "a/b", "[::1", "[::1]x", "a@b",
        ] {
            assert!(!valid_authority(bad), "{bad}");
        }
    }
}
