//! Strict `Transfer-Encoding: chunked` framing (RFC 9112 §7.1), as a streaming
//! validator and re-encoder: it walks the bytes of a chunked body as they arrive,
//! says how many belong to the message and whether it is complete (so the proxy
//! knows exactly where the next message starts), and writes the body again in
//! canonical form — what is forwarded is never the input's framing bytes:
//! chunk sizes as lower-case hex without leading zeros, CRLF; chunk extensions
//! dropped (validated, then not forwarded); trailer fields forwarded as
//! `name: value` only when they are allowed in a trailer (not framing, routing,
//! hop-by-hop, authentication or content metadata: RFC 9110 §6.5.1) and valid
//! UTF-8, else dropped. Chunk data is copied in bulk; a trailer line is the only
//! thing held (at most `MAX_TRAILERS` bytes).
//!
//! Rejected (never repaired): empty, non-hex, signed, `0x`-prefixed or overflowing
//! sizes; whitespace after the size unless an extension follows; control characters,
//! a bare `;` or more than 4 KiB in extensions; anything but CRLF after the size
//! line, after chunk data, and after each trailer line (bare LF and bare CR
//! included); malformed trailer fields, or more than 8 KiB of them.

use std::io::Write as _;

/// Longest chunk-size in hex digits (16 = u64).
const MAX_SIZE_DIGITS: u8 = 16;
/// Longest chunk extension list, per chunk.
pub const MAX_EXT: usize = 4096;
/// Largest trailer section.
pub const MAX_TRAILERS: usize = 8192;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ChunkError {
    #[error("invalid chunk size")]
    InvalidSize,
    #[error("chunk size overflows")]
    SizeOverflow,
    #[error("malformed chunk extension")]
    BadExtension,
    #[error("chunk extension longer than 4 KiB")]
    ExtensionTooLong,
    #[error("missing CRLF in chunk framing")]
    MissingCrlf,
    #[error("malformed trailer field")]
    BadTrailer,
    #[error("trailer section longer than 8 KiB")]
    TrailersTooLong,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// At the first digit of a chunk size.
    SizeStart,
    /// Inside the hex digits.
    Size,
    /// Whitespace after the size: only `;` may follow.
    SizeWs,
    /// After `;` (optionally after whitespace): at an extension name.
    ExtNameStart,
    ExtName,
    /// After the name: whitespace, `=`, `;` or CR.
    ExtAfterName,
    /// After `=`: at the value.
    ExtValueStart,
    ExtToken,
    ExtQuoted,
    ExtQuotedEscape,
    /// After a value: whitespace, `;` or CR.
    ExtAfterValue,
    /// Saw CR at the end of the size line; LF must follow.
    SizeLf,
    Data,
    DataCr,
    DataLf,
    /// At the start of a trailer line (or the final CRLF).
    TrailerStart,
    TrailerName,
    TrailerValue,
    TrailerLf,
    /// Saw CR of the final empty line.
    EndLf,
    Done,
}

/// Where a chunked body stands.
#[derive(Debug, Clone)]
pub struct ChunkedDecoder {
    state: State,
    size: u64,
    digits: u8,
    ext_len: usize,
    trailer_len: usize,
    /// The trailer line being read (allocated only when a body has trailers).
    line: Vec<u8>,
    /// Data bytes seen in total (for body-size limits and counters).
    pub data_len: u64,
    /// Trailer fields not forwarded (not allowed in a trailer, or not UTF-8).
    pub dropped_trailers: u32,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        ChunkedDecoder {
            state: State::SizeStart,
            size: 0,
            digits: 0,
            ext_len: 0,
            trailer_len: 0,
            line: Vec::new(),
            data_len: 0,
            dropped_trailers: 0,
        }
    }
}

/// Fields never forwarded in a trailer section besides the hop-by-hop ones
/// (`rewrite::HOP`): they frame, route, authenticate, or describe the content
/// (RFC 9110 §6.5.1) — a recipient that merged them into the head would be
/// misled.
const NOT_IN_TRAILERS: [&str; 19] = [
    "content-length",
    "transfer-encoding",
    "host",
    "content-type",
    "content-encoding",
    "content-range",
    "cookie",
    "set-cookie",
    "authorization",
    "proxy-authorization",
    "www-authenticate",
    "cache-control",
    "expires",
    "max-forwards",
    "pragma",
    "range",
    "age",
    "location",
    "vary",
];

/// A trailer field `name: value` (as read, without CRLF) in canonical form, or
/// `None` when it is not forwarded.
fn trailer_field(line: &[u8]) -> Option<(&str, &str)> {
    let text = std::str::from_utf8(line).ok()?;
    // The state machine let through only `tchar+ ":" field-content`.
    let (name, value) = text.split_once(':')?;
    if NOT_IN_TRAILERS
        .iter()
        .chain(&super::rewrite::HOP)
        .any(|n| name.eq_ignore_ascii_case(n))
    {
        return None;
    }
    Some((name, value.trim_matches([' ', '\t'])))
}

/// RFC 9110 tchar.
pub fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn is_ws(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

fn hex(b: u8) -> Option<u64> {
    (b as char).to_digit(16).map(u64::from)
}

impl ChunkedDecoder {
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Walk `buf`, appending the canonical form of what it holds to `out`;
    /// returns how many bytes of `buf` belong to the body (all of `buf` unless
    /// the body ended inside it). Call again with more bytes until `is_done()`.
    pub fn advance(&mut self, buf: &[u8], out: &mut Vec<u8>) -> Result<usize, ChunkError> {
        let mut i = 0;
        while i < buf.len() && self.state != State::Done {
            if self.state == State::Data {
                i += self.data(&buf[i..], out);
                continue;
            }
            let b = buf[i];
            i += 1;
            self.count()?;
            self.state = self.step(b, out)?;
        }
        Ok(i)
    }

    /// Chunk data, copied in bulk: how much of `buf` it took.
    #[inline]
    fn data(&mut self, buf: &[u8], out: &mut Vec<u8>) -> usize {
        let take = buf
            .len()
            .min(usize::try_from(self.size).unwrap_or(usize::MAX));
        out.extend_from_slice(&buf[..take]);
        self.size -= take as u64;
        self.data_len += take as u64;
        if self.size == 0 {
            self.state = State::DataCr;
        }
        take
    }

    /// One more byte of extensions or trailers: within their limits?
    #[inline]
    fn count(&mut self) -> Result<(), ChunkError> {
        use State::*;
        match self.state {
            ExtNameStart | ExtName | ExtAfterName | ExtValueStart | ExtToken | ExtQuoted
            | ExtQuotedEscape | ExtAfterValue | SizeWs => {
                self.ext_len += 1;
                if self.ext_len > MAX_EXT {
                    return Err(ChunkError::ExtensionTooLong);
                }
            }
            TrailerStart | TrailerName | TrailerValue | TrailerLf | EndLf => {
                self.trailer_len += 1;
                if self.trailer_len > MAX_TRAILERS {
                    return Err(ChunkError::TrailersTooLong);
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// The state after byte `b` (outside chunk data).
    #[inline]
    fn step(&mut self, b: u8, out: &mut Vec<u8>) -> Result<State, ChunkError> {
        use State::*;
        match self.state {
            SizeStart | Size | SizeWs => self.size_byte(b),
            ExtNameStart | ExtName | ExtAfterName | ExtValueStart | ExtToken | ExtQuoted
            | ExtQuotedEscape | ExtAfterValue => ext_byte(self.state, b),
            SizeLf | DataCr | DataLf => self.line_end(b, out),
            TrailerStart | TrailerName | TrailerValue | TrailerLf | EndLf => {
                self.trailer_byte(b, out)
            }
            // Handled by `advance` (bulk copy, loop guard): no change.
            s @ (Data | Done) => Ok(s),
        }
    }

    /// The chunk-size line up to its extensions or CR.
    fn size_byte(&mut self, b: u8) -> Result<State, ChunkError> {
        use State::*;
        Ok(match (self.state, b) {
            (SizeStart, _) => {
                self.size = hex(b).ok_or(ChunkError::InvalidSize)?;
                self.digits = 1;
                self.ext_len = 0;
                Size
            }
            (Size, b'\r') => SizeLf,
            (Size | SizeWs, b';') => ExtNameStart,
            (Size | SizeWs, _) if is_ws(b) => SizeWs,
            (Size, _) => {
                let d = hex(b).ok_or(ChunkError::InvalidSize)?;
                self.digits += 1;
                if self.digits > MAX_SIZE_DIGITS {
                    return Err(ChunkError::SizeOverflow);
                }
                self.size = self
                    .size
                    .checked_mul(16)
                    .and_then(|s| s.checked_add(d))
                    .ok_or(ChunkError::SizeOverflow)?;
                Size
            }
            _ => return Err(ChunkError::InvalidSize),
        })
    }

    /// The LF that ends a size line (which is written out again, canonical,
    /// without extensions), and the CRLF after chunk data.
    fn line_end(&mut self, b: u8, out: &mut Vec<u8>) -> Result<State, ChunkError> {
        use State::*;
        Ok(match (self.state, b) {
            (SizeLf, b'\n') => {
                let _ = write!(out, "{:x}\r\n", self.size);
                if self.size == 0 {
                    self.trailer_len = 0;
                    TrailerStart
                } else {
                    Data
                }
            }
            (DataCr, b'\r') => DataLf,
            (DataLf, b'\n') => {
                out.extend_from_slice(b"\r\n");
                SizeStart
            }
            _ => return Err(ChunkError::MissingCrlf),
        })
    }

    /// The trailer section: fields kept in `line` until their CRLF, then
    /// forwarded or dropped; the empty line ends the body.
    fn trailer_byte(&mut self, b: u8, out: &mut Vec<u8>) -> Result<State, ChunkError> {
        use State::*;
        Ok(match (self.state, b) {
            (TrailerStart, b'\r') => EndLf,
            (TrailerStart, _) if is_tchar(b) => {
                self.line.clear();
                self.line.push(b);
                TrailerName
            }
            (TrailerName, _) if is_tchar(b) => {
                self.line.push(b);
                TrailerName
            }
            (TrailerName, b':') => {
                self.line.push(b);
                TrailerValue
            }
            (TrailerValue, b'\r') => TrailerLf,
            (TrailerValue, _) if b == b'\t' || (b >= 0x20 && b != 0x7f) => {
                self.line.push(b);
                TrailerValue
            }
            (TrailerStart | TrailerName | TrailerValue, _) => return Err(ChunkError::BadTrailer),
            (TrailerLf, b'\n') => {
                match trailer_field(&self.line) {
                    Some((name, value)) => {
                        out.extend_from_slice(name.as_bytes());
                        out.extend_from_slice(b": ");
                        out.extend_from_slice(value.as_bytes());
                        out.extend_from_slice(b"\r\n");
                    }
                    None => self.dropped_trailers += 1,
                }
                TrailerStart
            }
            (EndLf, b'\n') => {
                out.extend_from_slice(b"\r\n");
                self.line = Vec::new();
                Done
            }
            _ => return Err(ChunkError::MissingCrlf),
        })
    }
}

/// Chunk extensions (`;name[=token|"quoted"]`), which are checked and dropped.
fn ext_byte(state: State, b: u8) -> Result<State, ChunkError> {
    use State::*;
    Ok(match (state, b) {
        (ExtNameStart, _) if is_ws(b) => ExtNameStart,
        (ExtNameStart | ExtName, _) if is_tchar(b) => ExtName,
        (ExtName | ExtAfterName, b'=') => ExtValueStart,
        (ExtName | ExtAfterName | ExtAfterValue | ExtToken, b';') => ExtNameStart,
        (ExtName | ExtAfterName | ExtAfterValue | ExtToken, b'\r') => SizeLf,
        (ExtName | ExtAfterName, _) if is_ws(b) => ExtAfterName,
        (ExtValueStart, _) if is_ws(b) => ExtValueStart,
        (ExtValueStart, b'"') => ExtQuoted,
        (ExtValueStart | ExtToken, _) if is_tchar(b) => ExtToken,
        (ExtToken | ExtAfterValue, _) if is_ws(b) => ExtAfterValue,
        (ExtQuoted, b'"') => ExtAfterValue,
        (ExtQuoted, b'\\') => ExtQuotedEscape,
        (ExtQuoted | ExtQuotedEscape, _) if b == b'\t' || (b >= 0x20 && b != 0x7f) => ExtQuoted,
        _ => return Err(ChunkError::BadExtension),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (bytes of the body, complete, data bytes)
    type Walk = (usize, bool, u64);

    fn whole(body: &[u8]) -> Result<Walk, ChunkError> {
        let mut d = ChunkedDecoder::default();
        let n = d.advance(body, &mut Vec::new())?;
        Ok((n, d.is_done(), d.data_len))
    }

    /// Feed one byte at a time: the result must not depend on how bytes arrive.
    fn bytewise(body: &[u8]) -> Result<Walk, ChunkError> {
        Ok(bytewise_out(body)?.0)
    }

    fn bytewise_out(body: &[u8]) -> Result<(Walk, Vec<u8>), ChunkError> {
        let mut d = ChunkedDecoder::default();
        let mut n = 0;
        let mut out = Vec::new();
        for k in 0..body.len() {
            n += d.advance(&body[k..k + 1], &mut out)?;
            if d.is_done() {
                break;
            }
        }
        Ok(((n, d.is_done(), d.data_len), out))
    }

    fn canonical(body: &[u8]) -> String {
        let mut d = ChunkedDecoder::default();
        let mut out = Vec::new();
        d.advance(body, &mut out).unwrap();
        assert!(d.is_done());
        let (_, bytewise) = bytewise_out(body).unwrap();
        assert_eq!(
            out, bytewise,
            "the output must not depend on how bytes arrive"
        );
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn forwards_the_canonical_form() {
        let cases: &[(&[u8], &str)] = &[
            (b"5\r\nhello\r\n0\r\n\r\n", "5\r\nhello\r\n0\r\n\r\n"),
            (b"000A\r\n0123456789\r\n0000\r\n\r\n", "a\r\n0123456789\r\n0\r\n\r\n"),
            (
                b"5 ; a = \"q\\\" v\" ; b\r\nhello\r\n0;last\r\n\r\n",
                "5\r\nhello\r\n0\r\n\r\n",
            ),
            (
                b"1\r\nx\r\n0\r\nX-Sum:\t 1 \r\nExpires: never\r\nContent-Length: 9\r\nx-b:2\r\n\r\n",
                "1\r\nx\r\n0\r\nX-Sum: 1\r\nx-b: 2\r\n\r\n",
            ),
            (b"0\r\nTransfer-Encoding: chunked\r\nHost: evil\r\n\r\n", "0\r\n\r\n"),
        ];
        for (body, want) in cases {
            assert_eq!(canonical(body), *want, "{}", String::from_utf8_lossy(body));
        }
        let mut d = ChunkedDecoder::default();
        d.advance(b"0\r\nX: \xe9t\xe9\r\nHost: a\r\n\r\n", &mut Vec::new())
            .unwrap();
        assert_eq!(d.dropped_trailers, 2, "not UTF-8, and a routing field");
    }

    #[test]
    fn valid_bodies() {
        let cases: &[(&[u8], u64)] = &[
            (b"5\r\nhello\r\n0\r\n\r\n", 5),
            (b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", 11),
            (b"A\r\n0123456789\r\n0\r\n\r\n", 10),
            (b"5;name=value\r\nhello\r\n0\r\n\r\n", 5),
            (b"5 ; a = \"quoted \\\" v\" ; b\r\nhello\r\n0\r\n\r\n", 5),
            (b"0\r\nExpires: never\r\nX-Sum: 1\r\n\r\n", 0),
            (b"000005\r\nhello\r\n0\r\n\r\n", 5),
        ];
        for (body, len) in cases {
            let want = Ok((body.len(), true, *len));
            assert_eq!(whole(body), want, "{}", String::from_utf8_lossy(body));
            assert_eq!(bytewise(body), want, "{}", String::from_utf8_lossy(body));
        }
    }

    #[test]
    fn stops_exactly_at_the_end() {
        let mut d = ChunkedDecoder::default();
        let input = b"3\r\nabc\r\n0\r\n\r\nGET /next HTTP/1.1\r\n";
        let mut out = Vec::new();
        assert_eq!(d.advance(input, &mut out), Ok(13));
        assert_eq!(out, b"3\r\nabc\r\n0\r\n\r\n");
        assert!(d.is_done());
    }

    #[test]
    fn rejects_smuggling_shapes() {
        use ChunkError::*;
        let cases: &[(&[u8], ChunkError)] = &[
            (b"\r\nhello\r\n0\r\n\r\n", InvalidSize),
            (b";ext\r\n", InvalidSize),
            (b"0x5\r\nhello\r\n0\r\n\r\n", InvalidSize),
            (b"+5\r\nhello\r\n", InvalidSize),
            (b"-5\r\nhello\r\n", InvalidSize),
            (b" 5\r\nhello\r\n", InvalidSize),
            (b"5 \r\nhello\r\n", InvalidSize),
            (b"g\r\n", InvalidSize),
            (b"10000000000000000\r\n", SizeOverflow),
            (b"5\nhello\r\n0\r\n\r\n", InvalidSize),
            (b"5\r\rhello", MissingCrlf),
            (b"5;\r\nhello", BadExtension),
            (b"5;a\nb\r\nhello", BadExtension),
            (b"5;a=\x00\r\nhello", BadExtension),
            (b"5;a=\"x\x01\"\r\nhello", BadExtension),
            (b"5;=v\r\nhello", BadExtension),
            (b"5\r\nhelloX\r\n", MissingCrlf),
            (b"5\r\nhello\n0\r\n\r\n", MissingCrlf),
            (b"5\r\nhello\r\n0\r\n\n", BadTrailer),
            (b"0\r\n\r\r", MissingCrlf),
            (b"0\r\nBad Name: x\r\n\r\n", BadTrailer),
            (b"0\r\nX: a\nY: b\r\n\r\n", BadTrailer),
            (b"0\r\nX: a\r\r\n\r\n", MissingCrlf),
            (b"0\r\nX: \x00\r\n\r\n", BadTrailer),
        ];
        for (body, err) in cases {
            assert_eq!(
                whole(body).map(|_| ()),
                Err(*err),
                "{}",
                String::from_utf8_lossy(body)
            );
            assert_eq!(
                bytewise(body).map(|_| ()),
                Err(*err),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn limits_extensions_and_trailers() {
        let mut ext = b"1;a=".to_vec();
        ext.extend(std::iter::repeat_n(b'x', MAX_EXT));
        assert_eq!(whole(&ext).map(|_| ()), Err(ChunkError::ExtensionTooLong));
        let mut tr = b"0\r\n".to_vec();
        for _ in 0..1000 {
            tr.extend_from_slice(b"X-Pad: 0123456789\r\n");
        }
        assert_eq!(whole(&tr).map(|_| ()), Err(ChunkError::TrailersTooLong));
    }

    #[test]
    fn huge_but_valid_size_is_counted_not_buffered() {
        let mut d = ChunkedDecoder::default();
        let mut out = Vec::new();
        assert_eq!(d.advance(b"ffffffffffffffff\r\n", &mut out), Ok(18));
        let block = [0u8; 65536];
        for _ in 0..16 {
            out.clear();
            assert_eq!(d.advance(&block, &mut out), Ok(65536));
            assert_eq!(out.len(), 65536);
        }
        assert_eq!(d.data_len, 16 * 65536);
        assert!(!d.is_done());
    }
}
