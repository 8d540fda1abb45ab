//! The one test origin: a listener on 127.0.0.1:0 that serves each connection
//! with a `Behaviour` — TCP ones (echo, sink, record, reset, hello) and HTTP
//! ones (a fixed answer per head, a named keep-alive server, a fixed reply
//! after a delay) — counting connections and recording what it received, per
//! connection and, for the HTTP behaviours, per request.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::Checksum;

/// How the origin serves each connection.
#[derive(Clone, Copy, Debug)]
pub enum Behaviour {
    /// Echo every byte back; FIN after the client's FIN.
    Echo,
    /// Read to end of stream, then answer `"{name} got {n} bytes sum {x}\n"` and close.
    SinkThenReport,
    /// Record everything received (until FIN), answer nothing, close at FIN.
    Record,
    /// Reset the connection as soon as the first bytes arrive.
    ResetOnData,
    /// Say `"{name}\n"` at once, then echo.
    Hello,
    /// Answer these bytes to every read that ends a request head (one request
    /// per read: for bodyless requests, one at a time), keeping the connection.
    Answer(&'static [u8]),
    /// HTTP keep-alive: to each whole request (head and body), `200` with
    /// `x-server: NAME`, these extra header lines (each ending in CRLF) and
    /// the body `NAME\n` (none for HEAD).
    Named(&'static str),
    /// HTTP: after the first whole request and this delay, exactly these bytes
    /// (any status, framing or garbage), then close.
    Fixed(&'static [u8], Duration),
}

impl Behaviour {
    fn http(self) -> bool {
        matches!(self, Behaviour::Named(_) | Behaviour::Fixed(..))
    }
}

/// A running origin (it lives until the test's runtime ends).
#[derive(Clone)]
pub struct Origin {
    pub name: &'static str,
    pub addr: SocketAddr,
    conns: Arc<AtomicU64>,
    /// Bytes received per connection (`Record`, `Answer`).
    received: Arc<Mutex<Vec<Vec<u8>>>>,
    /// Whole requests received (the HTTP behaviours).
    requests: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl Origin {
    pub async fn start(name: &'static str, b: Behaviour) -> Origin {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let o = Origin {
            name,
            addr: l.local_addr().unwrap(),
            conns: Arc::default(),
            received: Arc::default(),
            requests: Arc::default(),
        };
        let me = o.clone();
        tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                me.conns.fetch_add(1, Relaxed);
                if b.http() {
                    tokio::spawn(serve_http(s, name, b, me.requests.clone()));
                    continue;
                }
                let idx = {
                    let mut seen = me.received.lock().unwrap();
                    seen.push(Vec::new());
                    seen.len() - 1
                };
                tokio::spawn(serve_tcp(s, name, b, me.received.clone(), idx));
            }
        });
        o
    }

    /// An HTTP origin answering `answer` to every request head.
    pub async fn start_http(answer: &'static [u8]) -> Origin {
        Origin::start("http", Behaviour::Answer(answer)).await
    }

    /// The named keep-alive HTTP origin (`Behaviour::Named`).
    pub async fn http(name: &'static str, extra: &'static str) -> Origin {
        Origin::start(name, Behaviour::Named(extra)).await
    }

    /// An HTTP origin that sends `bytes` after `delay`, then closes
    /// (`Behaviour::Fixed`).
    pub async fn replying(bytes: &'static [u8], delay: Duration) -> Origin {
        Origin::start("fixed", Behaviour::Fixed(bytes, delay)).await
    }

    /// Connections accepted so far.
    pub fn conns(&self) -> u64 {
        self.conns.load(Relaxed)
    }

    /// The bytes received on connection `i` (in accept order).
    pub fn received(&self, i: usize) -> Vec<u8> {
        self.received.lock().unwrap()[i].clone()
    }

    /// The bytes received on every connection, in accept order.
    pub fn received_all(&self) -> Vec<u8> {
        self.received.lock().unwrap().concat()
    }

    /// Every request, raw, as text.
    pub fn seen(&self) -> Vec<String> {
        let r = self.requests.lock().unwrap();
        r.iter()
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .collect()
    }

    /// Every request head, without its final empty line.
    pub fn heads(&self) -> Vec<String> {
        self.seen()
            .into_iter()
            .map(|r| r.split("\r\n\r\n").next().unwrap_or("").to_string())
            .collect()
    }

    pub fn last(&self) -> String {
        self.heads().last().cloned().unwrap_or_default()
    }

    /// Requests received so far (the HTTP behaviours).
    pub fn count(&self) -> usize {
        self.requests.lock().unwrap().len()
    }
}

async fn serve_tcp(
    mut s: TcpStream,
    name: &str,
    b: Behaviour,
    seen: Arc<Mutex<Vec<Vec<u8>>>>,
    idx: usize,
) {
    if let Behaviour::Hello = b
        && s.write_all(format!("{name}\n").as_bytes()).await.is_err()
    {
        return;
    }
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    let mut sum = Checksum::default();
    loop {
        let n = match s.read(&mut buf).await {
            Ok(n) => n,
            Err(_) => return,
        };
        if n == 0 {
            break;
        }
        total += n as u64;
        match b {
            Behaviour::Echo | Behaviour::Hello => {
                if s.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
            Behaviour::SinkThenReport => sum.update(&buf[..n]),
            Behaviour::Record => seen.lock().unwrap()[idx].extend_from_slice(&buf[..n]),
            Behaviour::Answer(answer) => {
                seen.lock().unwrap()[idx].extend_from_slice(&buf[..n]);
                if buf[..n].ends_with(b"\r\n\r\n") && s.write_all(answer).await.is_err() {
                    return;
                }
            }
            Behaviour::ResetOnData => {
                let _ = socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO));
                return;
            }
            Behaviour::Named(_) | Behaviour::Fixed(..) => unreachable!("served by serve_http"),
        }
    }
    if let Behaviour::SinkThenReport = b {
        let _ = s
            .write_all(format!("{name} got {total} bytes sum {:016x}\n", sum.0).as_bytes())
            .await;
    }
    let _ = s.shutdown().await;
}

/// Where the request at the start of `b` ends (head and Content-Length or
/// chunked body), if it is all there.
fn request_end(b: &[u8]) -> Option<usize> {
    let end = b.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&b[..end]).to_ascii_lowercase();
    if let Some(cl) = head.lines().find_map(|l| l.strip_prefix("content-length:")) {
        let n: usize = cl.trim().parse().ok()?;
        return (b.len() >= end + n).then_some(end + n);
    }
    if head.contains("transfer-encoding: chunked") {
        let body = &b[end..];
        return body
            .windows(5)
            .position(|w| w == b"0\r\n\r\n")
            .map(|p| end + p + 5);
    }
    Some(end)
}

async fn serve_http(
    mut s: TcpStream,
    name: &'static str,
    b: Behaviour,
    requests: Arc<Mutex<Vec<Vec<u8>>>>,
) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let Some(end) = request_end(&buf) else {
            match s.read(&mut chunk).await {
                Ok(n) if n > 0 => buf.extend_from_slice(&chunk[..n]),
                _ => {
                    if !buf.is_empty() && matches!(b, Behaviour::Fixed(..)) {
                        // A cut request still counts as seen.
                        requests.lock().unwrap().push(std::mem::take(&mut buf));
                    }
                    return;
                }
            }
            continue;
        };
        let req: Vec<u8> = buf.drain(..end).collect();
        let is_head = req.starts_with(b"HEAD ");
        requests.lock().unwrap().push(req);
        match b {
            Behaviour::Fixed(bytes, delay) => {
                tokio::time::sleep(delay).await;
                let _ = s.write_all(bytes).await;
                let _ = s.shutdown().await;
                return;
            }
            Behaviour::Named(extra) => {
                let body = format!("{name}\n");
                let mut out = format!(
                    "HTTP/1.1 200 OK\r\nx-server: {name}\r\n{extra}content-length: {}\r\n\r\n",
                    body.len()
                );
                if !is_head {
                    out.push_str(&body);
                }
                if s.write_all(out.as_bytes()).await.is_err() {
                    return;
                }
            }
            _ => unreachable!("served by serve_tcp"),
        }
    }
}
