//! Strict HTTP/1.1 response heads from servers: the same rules as requests where
//! they apply (line endings, Content-Length, Transfer-Encoding), plus how the body
//! is delimited given the request method. A violation is a 502 for the client and
//! the server connection is never reused.

use super::codec::{content_length, head_end};
use super::framing::{Declared, TeList, connection_field};

/// How a response body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RespFraming {
    /// No body (HEAD, 1xx, 204, 304, or Content-Length: 0).
    None,
    Length(u64),
    Chunked,
    /// Until the server closes the connection.
    Close,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed response from server")]
pub struct BadResponse;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RespHead {
    pub status: u16,
    pub framing: RespFraming,
    /// The framing fields as declared. Forwarded (canonically) with the head,
    /// even when the body is absent by status or method: the `Content-Length`
    /// of a HEAD or 304 response describes the representation.
    pub declared: Declared,
    /// The server will close (or HTTP/1.0 without keep-alive): do not reuse.
    pub close: bool,
    pub len: usize,
}

/// Parse a response head at the start of `buf` (after checking line endings).
/// `head_request`: the request was HEAD, so the response has no body.
pub fn parse_response<'b>(
    buf: &'b [u8],
    headers: &mut [httparse::Header<'b>],
    head_request: bool,
    max_head: usize,
) -> Result<Option<RespHead>, BadResponse> {
    let Some(end) = head_end(buf, false).map_err(|()| BadResponse)? else {
        if buf.len() > max_head {
            return Err(BadResponse);
        }
        return Ok(None);
    };
    let mut resp = httparse::Response::new(headers);
    let len = match resp.parse(&buf[..end]) {
        Ok(httparse::Status::Complete(n)) => n,
        _ => return Err(BadResponse),
    };
    let status = resp.code.ok_or(BadResponse)?;
    let minor = resp.version.ok_or(BadResponse)?;
    if !(100..=999).contains(&status) || minor > 1 {
        return Err(BadResponse);
    }
    let mut f = RespFields::scan(resp.headers, minor)?;
    let bodyless = head_request || (100..200).contains(&status) || status == 204 || status == 304;
    let framing = f.framing(bodyless);
    Ok(Some(RespHead {
        status,
        framing,
        declared: f.declared(),
        close: f.close,
        len,
    }))
}

/// The response header fields that frame it, checked as they are read.
struct RespFields {
    cl: Option<u64>,
    te: bool,
    codings: TeList,
    close: bool,
}

impl RespFields {
    fn scan(headers: &[httparse::Header<'_>], minor: u8) -> Result<RespFields, BadResponse> {
        let mut f = RespFields {
            cl: None,
            te: false,
            codings: TeList::default(),
            close: minor == 0,
        };
        for h in headers {
            if h.value
                .iter()
                .any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f)
            {
                return Err(BadResponse);
            }
            let v = std::str::from_utf8(h.value).map_err(|_| BadResponse)?;
            if h.name.eq_ignore_ascii_case("content-length") {
                let n = content_length(v).ok_or(BadResponse)?;
                if f.cl.is_some_and(|c| c != n) {
                    return Err(BadResponse);
                }
                f.cl = Some(n);
            } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                f.te = true;
                f.codings.add(v).map_err(|_| BadResponse)?;
            } else if h.name.eq_ignore_ascii_case("connection") {
                // As for requests: a server cannot unframe its response.
                connection_field(v, minor, &mut f.close).map_err(|_| BadResponse)?;
            }
        }
        if f.te && f.cl.is_some() {
            return Err(BadResponse);
        }
        Ok(f)
    }

    /// The framing fields as declared (what goes on to the client).
    fn declared(&self) -> Declared {
        match (self.te, self.cl) {
            (true, _) => Declared::Codings(self.codings),
            (false, Some(n)) => Declared::Length(n),
            (false, None) => Declared::Nothing,
        }
    }

    /// Where the body ends; a body that ends by closing makes the
    /// connection one that closes.
    fn framing(&mut self, bodyless: bool) -> RespFraming {
        if bodyless {
            return RespFraming::None;
        }
        if self.te {
            if self.codings.chunked {
                return RespFraming::Chunked;
            }
            // A response may end a non-chunked coding by closing (RFC 9112 §6.3).
            self.close = true;
            return RespFraming::Close;
        }
        match self.cl {
            Some(0) => RespFraming::None,
            Some(n) => RespFraming::Length(n),
            None => {
                self.close = true;
                RespFraming::Close
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(raw: &[u8], head: bool) -> Result<Option<RespHead>, BadResponse> {
        let mut h = [httparse::EMPTY_HEADER; 64];
        parse_response(raw, &mut h, head, 16384)
    }

    #[test]
    fn framings() {
        let p = |raw: &[u8]| parse(raw, false).unwrap().unwrap();
        assert_eq!(
            p(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n").framing,
            RespFraming::Length(5)
        );
        assert_eq!(
            p(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n").framing,
            RespFraming::Chunked
        );
        let r = p(b"HTTP/1.1 200 OK\r\n\r\n");
        assert_eq!((r.framing, r.close), (RespFraming::Close, true));
        assert_eq!(
            p(b"HTTP/1.1 204 No Content\r\nContent-Length: 9\r\n\r\n").framing,
            RespFraming::None
        );
        assert_eq!(
            p(b"HTTP/1.1 304 Not Modified\r\n\r\n").framing,
            RespFraming::None
        );
        assert_eq!(
            p(b"HTTP/1.1 100 Continue\r\n\r\n").framing,
            RespFraming::None
        );
        let r = parse(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", true)
            .unwrap()
            .unwrap();
        assert_eq!(r.framing, RespFraming::None);
        assert!(p(b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n").close);
        assert_eq!(parse(b"HTTP/1.1 200 OK\r\nContent-", false), Ok(None));
    }

    #[test]
    fn rejects_ambiguous_responses() {
        for raw in [
            &b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            b"HTTP/1.1 200 OK\nContent-Length: 5\n\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
            b"HTTP/1.1 99 Odd\r\n\r\n",
            b"garbage\r\n\r\n",
            b"HTTP/2.0 200 OK\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: Content-Length\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: keep-alive, transfer-encoding\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: br, chunked\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked;x=1\r\n\r\n",
        ] {
            assert_eq!(
                parse(raw, false),
                Err(BadResponse),
                "{}",
                String::from_utf8_lossy(raw)
            );
        }
    }
}
