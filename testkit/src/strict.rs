//! A strict HTTP/1.1 request parser written for the tests, independently of
//! fulcrum's codec (RFC 9112 read again): the fuzzer's origin parses what it
//! receives with it, and the fuzzer parses what the client sent with it to know
//! which requests the client's framing made.

/// One request, as its framing delimits it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Msg {
    pub method: String,
    /// Origin form (an absolute-form target is reduced to its path and query).
    pub target: String,
    pub minor: u8,
    /// The body, de-chunked.
    pub body: Vec<u8>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Parse {
    /// A whole request, how many bytes it took, and whether it ends the
    /// connection (`Connection: close`, or HTTP/1.0 without keep-alive).
    Done(Msg, usize, bool),
    /// Not enough bytes yet.
    Partial,
    /// Not a valid request (the reason).
    Bad(String),
}

fn bad<T>(why: impl Into<String>) -> Result<T, String> {
    Err(why.into())
}

fn tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

const CODINGS: [&str; 5] = ["gzip", "x-gzip", "deflate", "compress", "x-compress"];

/// Parse the request at the start of `buf`.
pub fn parse(buf: &[u8]) -> Parse {
    match parse_inner(buf) {
        Ok(Some((m, n, close))) => Parse::Done(m, n, close),
        Ok(None) => Parse::Partial,
        Err(e) => Parse::Bad(e),
    }
}

/// Every request of a byte stream, in order, up to the first that is not whole
/// or not valid, or the first that ends the connection.
pub fn parse_stream(mut buf: &[u8]) -> Vec<Msg> {
    let mut out = Vec::new();
    while let Parse::Done(m, n, close) = parse(buf) {
        out.push(m);
        if close {
            break;
        }
        buf = &buf[n..];
    }
    out
}

/// A head's lines (without CRLF) and its length.
type Lines<'b> = (Vec<&'b [u8]>, usize);

/// The lines of a head: every line ends in CRLF (no bare CR or LF). `None`
/// while the empty line has not come.
fn head_lines(buf: &[u8]) -> Result<Option<Lines<'_>>, String> {
    let mut lines = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i < buf.len() {
        match buf[i] {
            b'\n' => return bad("bare LF"),
            b'\r' => {
                match buf.get(i + 1) {
                    None => return Ok(None),
                    Some(b'\n') => {}
                    Some(_) => return bad("bare CR"),
                }
                let line = &buf[start..i];
                i += 2;
                start = i;
                if line.is_empty() {
                    return Ok(Some((lines, i)));
                }
                lines.push(line);
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    Ok(None)
}

fn valid_authority(a: &str) -> bool {
    let (host, port) = if let Some(rest) = a.strip_prefix('[') {
        let Some((ip, after)) = rest.split_once(']') else {
            return false;
        };
        if ip.parse::<std::net::Ipv6Addr>().is_err() {
            return false;
        }
        match after {
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
    !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=%".contains(&b))
        && port
            .is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()))
}

fn parse_inner(buf: &[u8]) -> Result<Option<(Msg, usize, bool)>, String> {
    // Empty lines before a request line are skipped (RFC 9112 §2.2).
    let mut skip = 0;
    while buf[skip..].starts_with(b"\r\n") {
        skip += 2;
    }
    let Some((lines, head_len)) = head_lines(&buf[skip..])? else {
        return Ok(None);
    };
    let head_len = skip + head_len;
    let line = std::str::from_utf8(lines[0]).map_err(|_| "request line not UTF-8")?;
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return bad("request line is not three parts");
    };
    if method.is_empty() || !method.bytes().all(tchar) {
        return bad("method");
    }
    if target.is_empty() || !target.bytes().all(|b| (0x21..0x7f).contains(&b)) {
        return bad("target");
    }
    let minor = match version {
        "HTTP/1.1" => 1,
        "HTTP/1.0" => 0,
        _ => return bad("version"),
    };
    let mut length: Option<u64> = None;
    let mut te: Option<bool> = None; // Some(chunked last)
    let mut host: Option<String> = None;
    let mut close = minor == 0;
    for l in &lines[1..] {
        let colon = l.iter().position(|&b| b == b':').ok_or("no colon")?;
        let (name, value) = (&l[..colon], &l[colon + 1..]);
        if name.is_empty() || !name.iter().all(|&b| tchar(b)) {
            return bad("field name");
        }
        if value.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f) {
            return bad("control byte in a value");
        }
        let name = std::str::from_utf8(name).unwrap().to_ascii_lowercase();
        let value = std::str::from_utf8(value)
            .map_err(|_| "value not UTF-8")?
            .trim_matches([' ', '\t']);
        match name.as_str() {
            "content-length" => {
                if value.is_empty()
                    || value.len() > 19
                    || !value.bytes().all(|b| b.is_ascii_digit())
                {
                    return bad("content-length");
                }
                let n: u64 = value.parse().map_err(|_| "content-length")?;
                if length.is_some_and(|l| l != n) {
                    return bad("two lengths");
                }
                length = Some(n);
            }
            "transfer-encoding" => {
                if minor == 0 {
                    return bad("te in 1.0");
                }
                for c in value.split(',').map(|c| c.trim_matches([' ', '\t'])) {
                    if te == Some(true) {
                        return bad("coding after chunked");
                    }
                    if c.eq_ignore_ascii_case("chunked") {
                        te = Some(true);
                    } else if CODINGS.iter().any(|k| c.eq_ignore_ascii_case(k)) {
                        te = Some(false);
                    } else {
                        return bad("coding");
                    }
                }
            }
            "host" => {
                if host.is_some() {
                    return bad("two hosts");
                }
                if !valid_authority(value) {
                    return bad("host");
                }
                host = Some(value.to_string());
            }
            "connection" => {
                for t in value.split(',').map(|t| t.trim_matches([' ', '\t'])) {
                    if t.eq_ignore_ascii_case("close") {
                        close = true;
                    } else if t.eq_ignore_ascii_case("keep-alive") && minor == 0 {
                        close = false;
                    }
                    if ["content-length", "transfer-encoding", "host"]
                        .iter()
                        .any(|n| t.eq_ignore_ascii_case(n))
                    {
                        return bad("connection names a framing field");
                    }
                }
            }
            "expect" if !value.eq_ignore_ascii_case("100-continue") => {
                return bad("expectation");
            }
            _ => {}
        }
    }
    let target = if target.starts_with('/') || (target == "*" && method == "OPTIONS") {
        target.to_string()
    } else {
        let lower = target.to_ascii_lowercase();
        let rest = if lower.starts_with("http://") {
            &target[7..]
        } else if lower.starts_with("https://") {
            &target[8..]
        } else {
            return bad("target form");
        };
        let cut = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, path) = rest.split_at(cut);
        if authority.is_empty() || authority.contains('@') || !valid_authority(authority) {
            return bad("authority");
        }
        if path.is_empty() {
            "/".to_string()
        } else if path.starts_with('?') {
            format!("/{path}")
        } else {
            path.to_string()
        }
    };
    if minor == 1 && host.is_none() {
        return bad("no host");
    }
    let rest = &buf[head_len..];
    let (body, used) = match (te, length) {
        (Some(_), Some(_)) => return bad("length and chunked"),
        (Some(false), None) => return bad("not chunked last"),
        (Some(true), None) => match dechunk(rest)? {
            Some(v) => v,
            None => return Ok(None),
        },
        (None, Some(n)) => {
            let n = usize::try_from(n).map_err(|_| "length")?;
            if rest.len() < n {
                return Ok(None);
            }
            (rest[..n].to_vec(), n)
        }
        (None, None) => (Vec::new(), 0),
    };
    let msg = Msg {
        method: method.to_string(),
        target,
        minor,
        body,
    };
    Ok(Some((msg, head_len + used, close)))
}

/// A whole chunked body: its data and its length in bytes.
fn dechunk(buf: &[u8]) -> Result<Option<(Vec<u8>, usize)>, String> {
    let mut data = Vec::new();
    let mut i = 0;
    loop {
        let Some(eol) = find_crlf(&buf[i..])? else {
            return Ok(None);
        };
        let line = &buf[i..i + eol];
        i += eol + 2;
        let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
        if digits == 0 || digits > 16 {
            return bad("chunk size");
        }
        let size = u64::from_str_radix(std::str::from_utf8(&line[..digits]).unwrap(), 16)
            .map_err(|_| "chunk size")?;
        check_extensions(&line[digits..])?;
        if size == 0 {
            break;
        }
        let size = usize::try_from(size).map_err(|_| "chunk size")?;
        if buf.len() < i + size + 2 {
            return Ok(None);
        }
        data.extend_from_slice(&buf[i..i + size]);
        i += size;
        if &buf[i..i + 2] != b"\r\n" {
            return bad("no CRLF after chunk data");
        }
        i += 2;
    }
    // Trailer fields, then the empty line.
    let mut trailers = 0;
    loop {
        let Some(eol) = find_crlf(&buf[i..])? else {
            return Ok(None);
        };
        let line = &buf[i..i + eol];
        i += eol + 2;
        if line.is_empty() {
            return Ok(Some((data, i)));
        }
        trailers += eol + 2;
        if trailers > 8192 {
            return bad("trailers too long");
        }
        let colon = line.iter().position(|&b| b == b':').ok_or("trailer")?;
        if colon == 0
            || !line[..colon].iter().all(|&b| tchar(b))
            || line[colon + 1..]
                .iter()
                .any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f)
        {
            return bad("trailer field");
        }
    }
}

/// Where the next CRLF is; an error for a bare CR or LF before it.
fn find_crlf(buf: &[u8]) -> Result<Option<usize>, String> {
    for (i, &b) in buf.iter().enumerate() {
        match b {
            b'\n' => return bad("bare LF"),
            b'\r' => {
                return match buf.get(i + 1) {
                    None => Ok(None),
                    Some(b'\n') => Ok(Some(i)),
                    Some(_) => bad("bare CR"),
                };
            }
            _ => {}
        }
    }
    Ok(None)
}

/// `*( BWS ";" BWS name [ BWS "=" BWS ( token / quoted-string ) ] ) BWS`
/// after a chunk size (whitespace only before an extension), at most 4 KiB.
fn check_extensions(mut s: &[u8]) -> Result<(), String> {
    if s.len() > 4096 {
        return bad("extensions too long");
    }
    let ws = |s: &mut &[u8]| {
        while let [b' ' | b'\t', rest @ ..] = *s {
            *s = rest;
        }
    };
    let token = |s: &mut &[u8]| {
        let n = s.iter().take_while(|&&b| tchar(b)).count();
        *s = &s[n..];
        n
    };
    let qchar = |c: u8| c == b'\t' || (c >= 0x20 && c != 0x7f);
    if s.is_empty() {
        return Ok(());
    }
    loop {
        ws(&mut s);
        let [b';', rest @ ..] = s else {
            return bad("extension");
        };
        s = rest;
        ws(&mut s);
        if token(&mut s) == 0 {
            return bad("extension name");
        }
        ws(&mut s);
        if let [b'=', rest @ ..] = s {
            s = rest;
            ws(&mut s);
            if let [b'"', rest @ ..] = s {
                s = rest;
                loop {
                    match s {
                        [b'"', rest @ ..] => {
                            s = rest;
                            break;
                        }
                        [b'\\', c, rest @ ..] if qchar(*c) => s = rest,
                        [c, rest @ ..] if qchar(*c) && *c != b'\\' => s = rest,
                        _ => return bad("quoted extension value"),
                    }
                }
            } else if token(&mut s) == 0 {
                return bad("extension value");
            }
            ws(&mut s);
        }
        if s.is_empty() {
            return Ok(());
        }
    }
}
