//! A seeded, deterministic mutation fuzzer of request heads and bodies, driven
//! through the real proxy in front of an origin that parses what it receives
//! strictly (`support::strict`, written apart from fulcrum's codec).
//!
//! Property, for every input: the origin receives exactly a prefix of the
//! requests the client's own framing made (same method, target and body bytes),
//! each framed strictly, and nothing else; and the client receives one origin
//! response per request the origin saw, in order, answering that request.
//!
//! `cargo test` runs a few hundred cases. A long run:
//! `FULCRUM_FUZZ_CASES=50000 cargo test --release --test fuzz_http -- --nocapture`
//! (`FULCRUM_FUZZ_SEED` picks another sequence; a failure prints its seed and case).

use fulcrum_testkit as support;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::strict::{self, Msg, Parse};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// xorshift64*: every case follows from the seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn chance(&mut self, one_in: usize) -> bool {
        self.below(one_in) == 0
    }
    fn pick<T: Clone>(&mut self, list: &[T]) -> T {
        list[self.below(list.len())].clone()
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// A chunked body as separate parts, so mutations can reach each one.
#[derive(Clone)]
struct Chunk {
    size: Vec<u8>,
    ext: Vec<u8>,
    data: Vec<u8>,
    crlf: Vec<u8>,
}

#[derive(Clone)]
enum Body {
    None,
    Raw(Vec<u8>),
    Chunked {
        chunks: Vec<Chunk>,
        last: Vec<u8>,
        trailers: Vec<Vec<u8>>,
    },
}

/// A field line as parts: name, separator, value, line end.
type Field = (Vec<u8>, Vec<u8>, Vec<u8>, Vec<u8>);

/// One request as parts: line, fields, end of head, body.
#[derive(Clone)]
struct Req {
    line: Vec<u8>,
    fields: Vec<Field>,
    end: Vec<u8>,
    body: Body,
}

impl Req {
    fn field(&mut self, name: &str, value: &str) {
        self.fields
            .push((name.into(), b": ".to_vec(), value.into(), b"\r\n".to_vec()));
    }

    fn bytes(&self) -> Vec<u8> {
        let mut out = self.line.clone();
        for (n, sep, v, eol) in &self.fields {
            out.extend_from_slice(n);
            out.extend_from_slice(sep);
            out.extend_from_slice(v);
            out.extend_from_slice(eol);
        }
        out.extend_from_slice(&self.end);
        match &self.body {
            Body::None => {}
            Body::Raw(b) => out.extend_from_slice(b),
            Body::Chunked {
                chunks,
                last,
                trailers,
            } => {
                for c in chunks {
                    out.extend_from_slice(&c.size);
                    out.extend_from_slice(&c.ext);
                    out.extend_from_slice(b"\r\n");
                    out.extend_from_slice(&c.data);
                    out.extend_from_slice(&c.crlf);
                }
                out.extend_from_slice(last);
                for t in trailers {
                    out.extend_from_slice(t);
                }
                out.extend_from_slice(b"\r\n");
            }
        }
        out
    }
}

/// Body bytes that look like a request, so a framing mistake shows.
const SMUGGLED: &[u8] = b"GET /smuggled HTTP/1.1\r\nHost: h.example\r\n\r\n";

fn body_bytes(rng: &mut Rng) -> Vec<u8> {
    match rng.below(4) {
        0 => SMUGGLED.to_vec(),
        1 => {
            let n = rng.below(300);
            rng.bytes(n)
        }
        2 => b"0\r\n\r\n".to_vec(),
        _ => {
            let n = rng.below(20);
            let mut b = rng.bytes(n);
            b.extend_from_slice(SMUGGLED);
            b
        }
    }
}

/// A valid request (mutations come after).
fn base(rng: &mut Rng, n: usize) -> Req {
    let method = rng.pick(&["GET", "POST", "PUT", "HEAD", "DELETE", "OPTIONS", "PATCH"]);
    let target = match rng.below(8) {
        0 => "http://h.example/abs?x=1".to_string(),
        1 if method == "OPTIONS" => "*".to_string(),
        2 => "http://h.example".to_string(),
        _ => format!("/f/{n}?q={}", rng.below(1000)),
    };
    let minor = if rng.chance(6) { 0 } else { 1 };
    let mut r = Req {
        line: format!("{method} {target} HTTP/1.{minor}\r\n").into_bytes(),
        fields: Vec::new(),
        end: b"\r\n".to_vec(),
        body: Body::None,
    };
    r.field("Host", "h.example");
    for _ in 0..rng.below(3) {
        let v = format!("v{}", rng.below(100));
        r.field(rng.pick(&["X-A", "Accept", "User-Agent", "Cookie"]), &v);
    }
    let chunked_ok = minor == 1;
    match rng.below(if chunked_ok { 3 } else { 2 }) {
        0 => {}
        1 => {
            let b = body_bytes(rng);
            r.field("Content-Length", &b.len().to_string());
            r.body = Body::Raw(b);
        }
        _ => {
            r.field("Transfer-Encoding", "chunked");
            let data = body_bytes(rng);
            let mut chunks = Vec::new();
            let mut rest = &data[..];
            while !rest.is_empty() {
                let take = 1 + rng.below(rest.len());
                let (d, more) = rest.split_at(take);
                rest = more;
                chunks.push(Chunk {
                    size: format!("{take:x}").into_bytes(),
                    ext: if rng.chance(4) {
                        b";a=b".to_vec()
                    } else {
                        Vec::new()
                    },
                    data: d.to_vec(),
                    crlf: b"\r\n".to_vec(),
                });
            }
            let trailers = if rng.chance(4) {
                vec![b"X-Sum: 1\r\n".to_vec()]
            } else {
                Vec::new()
            };
            r.body = Body::Chunked {
                chunks,
                last: b"0\r\n".to_vec(),
                trailers,
            };
        }
    }
    if !matches!(r.body, Body::None) && rng.chance(5) {
        r.field("Expect", "100-continue");
    }
    r
}

const CONTROLS: [u8; 8] = [0x00, 0x01, b'\t', b'\n', b'\r', 0x1f, 0x7f, b' '];
const HIGH: [u8; 4] = [0x80, 0xc3, 0xe9, 0xff];

/// One mutation of a request's parts.
fn mutate(rng: &mut Rng, r: &mut Req) {
    let nf = r.fields.len().max(1);
    match rng.below(16) {
        0 => {
            let v = rng.pick(&[
                "5",
                "0",
                "+5",
                "5 ",
                " 05",
                "5,5",
                "-1",
                "0x5",
                "99999999999999999999",
                "",
            ]);
            r.field(
                rng.pick(&["Content-Length", "content-length", "CONTENT-LENGTH"]),
                v,
            );
        }
        1 => {
            let v = rng.pick(&[
                "chunked",
                "chunked, gzip",
                "gzip, chunked",
                "xchunked",
                " chunked",
                "chunked;q=1",
                ",chunked",
                "identity",
                "gzip",
            ]);
            r.field(rng.pick(&["Transfer-Encoding", "transfer-encoding"]), v);
        }
        2 => {
            let v = rng.pick(&[
                "close, Content-Length",
                "keep-alive, Transfer-Encoding",
                "host",
                "x-a",
                "close",
                "keep-alive",
                "upgrade",
                "X-A, close",
            ]);
            r.field("Connection", v);
        }
        3 => {
            let i = rng.below(nf);
            if let Some(f) = r.fields.get_mut(i) {
                f.3 = rng.pick(&[b"\n".to_vec(), b"\r".to_vec(), b"\r\r\n".to_vec()]);
            }
        }
        4 => {
            let i = rng.below(nf);
            if let Some(f) = r.fields.get_mut(i) {
                f.1 = rng.pick(&[
                    b" : ".to_vec(),
                    b":".to_vec(),
                    b":\t".to_vec(),
                    b":  ".to_vec(),
                    b"\t: ".to_vec(),
                ]);
            }
        }
        5 => {
            // obs-fold, or a field line starting with whitespace.
            let i = rng.below(nf);
            if let Some(f) = r.fields.get_mut(i) {
                f.0.insert(0, rng.pick(b" \t"));
            }
        }
        6 => {
            let i = rng.below(nf);
            let b = if rng.chance(2) {
                rng.pick(&CONTROLS)
            } else {
                rng.pick(&HIGH)
            };
            if let Some(f) = r.fields.get_mut(i) {
                let part = if rng.chance(2) { &mut f.0 } else { &mut f.2 };
                let at = rng.below(part.len() + 1);
                part.insert(at, b);
            }
        }
        7 => {
            if let Body::Chunked { chunks, .. } = &mut r.body
                && !chunks.is_empty()
            {
                let i = rng.below(chunks.len());
                let c = &mut chunks[i];
                match rng.below(8) {
                    0 => c.size.insert(0, b'0'),
                    1 => c.size = c.size.to_ascii_uppercase(),
                    2 => c.size = [b"0x".as_slice(), &c.size].concat(),
                    3 => c.size.insert(0, rng.pick(b"-+ ")),
                    4 => c.size = b"10000000000000000".to_vec(),
                    5 => c.size.push(b' '),
                    6 => {
                        let n = c.data.len() + 1;
                        c.size = format!("{n:x}").into_bytes();
                    }
                    _ => c.crlf = rng.pick(&[b"\n".to_vec(), b"".to_vec(), b"X\r\n".to_vec()]),
                }
            }
        }
        8 => {
            if let Body::Chunked { chunks, .. } = &mut r.body
                && !chunks.is_empty()
            {
                let i = rng.below(chunks.len());
                chunks[i].ext = rng.pick(&[
                    b";".to_vec(),
                    b"; a".to_vec(),
                    b" ; a = \"q\\\" v\" ; b".to_vec(),
                    b";a=\x01".to_vec(),
                    b";a\nb".to_vec(),
                    b";a=\"unterminated".to_vec(),
                    b" ".to_vec(),
                    b";=v".to_vec(),
                ]);
            }
        }
        9 => {
            if let Body::Chunked { last, trailers, .. } = &mut r.body {
                match rng.below(4) {
                    0 => *last = b"000\r\n".to_vec(),
                    1 => trailers.push(b"Content-Length: 5\r\n".to_vec()),
                    2 => trailers.push(b"Bad Name: x\r\n".to_vec()),
                    _ => trailers.push(b"X: a\nY: b\r\n".to_vec()),
                }
            }
        }
        10 => {
            let v = rng.pick(&["HTTP/1.0", "HTTP/1.2", "HTTP/2.0", "http/1.1", "HTTP/1.1 "]);
            let line = String::from_utf8_lossy(&r.line).into_owned();
            if let Some(cut) = line.rfind(' ') {
                r.line = format!("{}{v}\r\n", &line[..cut + 1]).into_bytes();
            }
        }
        11 => {
            r.fields.retain(|f| !f.0.eq_ignore_ascii_case(b"host"));
            if rng.chance(2) {
                r.field(
                    "Host",
                    rng.pick(&["a b", "a:x", "[::1]:80", "a", "", "u@h"]),
                );
                r.field("Host", "h.example");
            }
        }
        12 => {
            let t = rng.pick(&[
                "/a\tb",
                "/a b",
                "*",
                "http://u@h/",
                "h.example:443",
                "http://h.example?x",
                "//double",
            ]);
            let line = String::from_utf8_lossy(&r.line).into_owned();
            let mut parts = line.splitn(3, ' ');
            let (m, _, v) = (parts.next(), parts.next(), parts.next());
            if let (Some(m), Some(v)) = (m, v) {
                r.line = format!("{m} {t} {v}").into_bytes();
            }
        }
        13 => r.end = rng.pick(&[b"\n".to_vec(), b"\r\n\r\n".to_vec(), b"".to_vec()]),
        14 => {
            // A length that does not match the body.
            if let Body::Raw(b) = &r.body {
                let n = b.len() + rng.below(3);
                let n = n.saturating_sub(1);
                r.fields
                    .retain(|f| !f.0.eq_ignore_ascii_case(b"content-length"));
                r.field("Content-Length", &n.to_string());
            }
        }
        _ => {
            let v = rng.pick(&["100-continue", "200-ok", "100-Continue"]);
            r.field("Expect", v);
        }
    }
}

/// One input: one to three requests, mutated, maybe a request behind them,
/// maybe cut short or with one byte flipped.
fn case(rng: &mut Rng) -> Vec<u8> {
    let mut out = Vec::new();
    if rng.chance(10) {
        out.extend_from_slice(b"\r\n");
    }
    for n in 0..1 + rng.below(3) {
        let mut r = base(rng, n);
        // A third of the requests stay valid, so pipelines get deep enough.
        let mutations = if rng.chance(3) { 0 } else { 1 + rng.below(3) };
        for _ in 0..mutations {
            mutate(rng, &mut r);
        }
        out.extend_from_slice(&r.bytes());
    }
    if rng.chance(3) {
        out.extend_from_slice(SMUGGLED);
    }
    if rng.chance(10) {
        let at = rng.below(out.len());
        out[at] = rng.next() as u8;
    }
    if rng.chance(8) {
        out.truncate(rng.below(out.len() + 1));
    }
    out
}

/// What the origin saw: every complete request, and what it could not parse.
#[derive(Default)]
struct Seen {
    msgs: Vec<Msg>,
    violations: Vec<String>,
}

fn fnv(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn describe(m: &Msg) -> String {
    format!(
        "{} {} {} {:016x}",
        m.method,
        m.target,
        m.body.len(),
        fnv(&m.body)
    )
}

/// The strict origin: parses each connection's bytes with `strict`, records
/// and answers every request, records a violation and closes on anything else.
async fn strict_origin() -> (SocketAddr, Arc<Mutex<Seen>>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let seen: Arc<Mutex<Seen>> = Arc::default();
    let s2 = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let seen = s2.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 16384];
                loop {
                    match strict::parse(&buf) {
                        Parse::Done(m, n, _) => {
                            buf.drain(..n);
                            let desc = describe(&m);
                            let close = m.minor == 0;
                            let body = if m.method == "HEAD" { "" } else { &desc };
                            let resp = format!(
                                "HTTP/1.1 200 OK\r\nx-origin: 1\r\ncontent-length: {}\r\n{}\r\n{body}",
                                desc.len(),
                                if close { "connection: close\r\n" } else { "" }
                            );
                            seen.lock().unwrap().msgs.push(m);
                            if s.write_all(resp.as_bytes()).await.is_err() || close {
                                return;
                            }
                            continue;
                        }
                        Parse::Bad(why) => {
                            seen.lock()
                                .unwrap()
                                .violations
                                .push(format!("{why}: {}", String::from_utf8_lossy(&buf)));
                            return;
                        }
                        Parse::Partial => {}
                    }
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
            });
        }
    });
    (addr, seen)
}

/// The responses a client read: (from the origin, body) for each, in order.
/// 1xx responses are skipped; `heads[i]`: response i answers a HEAD request.
fn responses(mut raw: &[u8], heads: &[bool]) -> Result<Vec<(bool, String)>, String> {
    let mut out = Vec::new();
    while !raw.is_empty() {
        let end = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .ok_or_else(|| format!("cut response: {}", String::from_utf8_lossy(raw)))?;
        let head = String::from_utf8_lossy(&raw[..end]).into_owned();
        raw = &raw[end + 4..];
        if head.starts_with("HTTP/1.1 1") {
            continue;
        }
        let origin = head.contains("\r\nx-origin: 1");
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| format!("no length: {head}"))?;
        let bodyless = origin && heads.get(out.len()).copied().unwrap_or(false);
        let len = if bodyless { 0 } else { len.min(raw.len()) };
        out.push((origin, String::from_utf8_lossy(&raw[..len]).into_owned()));
        raw = &raw[len..];
        if !origin {
            // fulcrum's own answer ends the connection; what follows would be
            // a body to a HEAD request, ignored.
            break;
        }
    }
    Ok(out)
}

/// The requests as the origin gets them: targets normalised as the frontend
/// does by default (`l7::path`, tested on its own), up to the first whose path
/// is refused.
fn normalized(msgs: Vec<Msg>) -> Vec<Msg> {
    let o = fulcrum::l7::path::PathOptions::default();
    let mut out = Vec::new();
    for mut m in msgs {
        match fulcrum::l7::path::normalize(&m.target, &o) {
            Ok(t) => m.target = t.into_owned(),
            Err(_) => break,
        }
        out.push(m);
    }
    out
}

fn show(input: &[u8]) -> String {
    String::from_utf8_lossy(input).escape_debug().to_string()
}

#[derive(Default, Debug)]
struct Tally {
    cases: u64,
    requests_sent: u64,
    forwarded: u64,
    /// Cases where fulcrum refused a request the test's parser accepts.
    stricter: u64,
    rejected_4xx_5xx: u64,
}

#[tokio::test]
async fn the_origin_receives_exactly_the_accepted_requests() {
    let cases: u64 = std::env::var("FULCRUM_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(400);
    let seed: u64 = std::env::var("FULCRUM_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x0018_f022);
    bounded(60 + cases / 50, async {
        let (origin, seen) = strict_origin().await;
        let d = Conf::new()
            .frontend(Frontend::web().timeouts([("http_request", "2s"), ("client", "2s")]))
            .backend(Backend::app(origin).timeouts([("server", "2s")]))
            .start();
        let addr = d.addr("web").unwrap();
        let mut rng = Rng(seed | 1);
        let mut tally = Tally::default();
        let mut stricter_examples = Vec::new();
        for n in 0..cases {
            let input = case(&mut rng);
            let expected = normalized(strict::parse_stream(&input));
            let before = seen.lock().unwrap().msgs.len();
            let mut c = TcpStream::connect(addr).await.unwrap();
            let _ = c.write_all(&input).await;
            let _ = c.shutdown().await;
            let mut got = Vec::new();
            let _ = tokio::time::timeout(Duration::from_secs(10), c.read_to_end(&mut got)).await;
            let what = || format!("seed {seed} case {n}: input \"{}\"", show(&input));
            let at_origin: Vec<Msg> = {
                let s = seen.lock().unwrap();
                assert!(s.violations.is_empty(), "{}: {:?}", what(), s.violations);
                s.msgs[before..].to_vec()
            };
            assert!(
                at_origin.len() <= expected.len() && at_origin[..] == expected[..at_origin.len()],
                "{}\norigin saw {at_origin:#?}\nthe client's framing made {expected:#?}",
                what()
            );
            let heads: Vec<bool> = at_origin.iter().map(|m| m.method == "HEAD").collect();
            let resps = responses(&got, &heads).unwrap_or_else(|e| panic!("{}: {e}", what()));
            let from_origin: Vec<&String> = resps.iter().filter(|r| r.0).map(|r| &r.1).collect();
            assert_eq!(
                from_origin.len(),
                at_origin.len(),
                "{}: one origin response per request; got \"{}\"",
                what(),
                show(&got)
            );
            for (m, body) in at_origin.iter().zip(&from_origin) {
                if m.method != "HEAD" {
                    assert_eq!(**body, describe(m), "{}", what());
                }
            }
            tally.cases += 1;
            tally.requests_sent += expected.len() as u64;
            tally.forwarded += at_origin.len() as u64;
            if resps.iter().any(|r| !r.0) {
                tally.rejected_4xx_5xx += 1;
            }
            if at_origin.len() < expected.len() {
                tally.stricter += 1;
                if stricter_examples.len() < 5 {
                    stricter_examples.push(show(&input));
                }
            }
        }
        // Nothing arrives late: once the daemon has stopped (every
        // connection ended), every request the origin ever saw was counted.
        d.shutdown().await;
        let s = seen.lock().unwrap();
        assert!(s.violations.is_empty(), "{:?}", s.violations);
        assert_eq!(s.msgs.len() as u64, tally.forwarded);
        println!("fuzz: seed {seed}: {tally:?}");
        for e in &stricter_examples {
            println!("fuzz: refused although the test's parser accepts it: \"{e}\"");
        }
        // The generator must reach both sides of the property.
        assert!(tally.forwarded > cases / 4, "{tally:?}");
        assert!(tally.rejected_4xx_5xx > cases / 10, "{tally:?}");
    })
    .await;
}
