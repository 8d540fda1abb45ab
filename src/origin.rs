//! `fulcrum origin`: a small test origin for demos, health checks and retries.
//!
//! HTTP (default): answers every request with `x-server: NAME` and a body naming
//! itself and echoing the method and path (`NAME GET /path\n`), keep-alive as the
//! client asks. TCP (`--tcp`): echoes every byte back. `delay` holds each answer
//! (each echo in tcp mode) back; `fail_rate` is the probability that a request (a
//! connection in tcp mode) is answered with a TCP reset instead; `status` sets the
//! HTTP status.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Debug, Clone)]
pub struct OriginOpts {
    pub name: String,
    pub tcp: bool,
    pub delay: Duration,
    pub fail_rate: f64,
    pub status: u16,
}

impl OriginOpts {
    pub fn http(name: &str) -> Self {
        OriginOpts {
            name: name.to_string(),
            tcp: false,
            delay: Duration::ZERO,
            fail_rate: 0.0,
            status: 200,
        }
    }
}

/// A running origin.
#[derive(Debug, Clone)]
pub struct Origin {
    pub addr: SocketAddr,
    /// Connections accepted.
    pub connections: Arc<AtomicU64>,
    /// HTTP requests answered (or, in tcp mode, connections echoed).
    pub hits: Arc<AtomicU64>,
}

/// Bind `addr` and serve on the current tokio runtime until the runtime stops.
pub async fn spawn(addr: SocketAddr, opts: OriginOpts) -> std::io::Result<Origin> {
    let listener = TcpListener::bind(addr).await?;
    let origin = Origin {
        addr: listener.local_addr()?,
        connections: Arc::default(),
        hits: Arc::default(),
    };
    let o = origin.clone();
    let opts = Arc::new(opts);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            };
            o.connections.fetch_add(1, Relaxed);
            let _ = stream.set_nodelay(true);
            let opts = opts.clone();
            let hits = o.hits.clone();
            tokio::spawn(async move {
                let _ = if opts.tcp {
                    echo(stream, &opts, &hits).await
                } else {
                    http(stream, &opts, &hits).await
                };
            });
        }
    });
    Ok(origin)
}

fn roll(p: f64) -> bool {
    p > 0.0 && (crate::net::rand::fastrand_u64() as f64 / u64::MAX as f64) < p
}

fn reset(s: &TcpStream) {
    let _ = socket2::SockRef::from(s).set_linger(Some(Duration::ZERO));
}

async fn echo(mut s: TcpStream, o: &OriginOpts, hits: &AtomicU64) -> std::io::Result<()> {
    if roll(o.fail_rate) {
        reset(&s);
        return Ok(());
    }
    hits.fetch_add(1, Relaxed);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = s.read(&mut buf).await?;
        if n == 0 {
            return s.shutdown().await;
        }
        if !o.delay.is_zero() {
            tokio::time::sleep(o.delay).await;
        }
        s.write_all(&buf[..n]).await?;
    }
}

async fn http(mut s: TcpStream, o: &OriginOpts, hits: &AtomicU64) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(8192);
    loop {
        // Read one request head.
        let (head_len, method, path, body_len, close) = loop {
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut req = httparse::Request::new(&mut headers);
            match req.parse(&buf) {
                Ok(httparse::Status::Complete(n)) => {
                    let mut body = 0usize;
                    let mut close = req.version == Some(0);
                    for h in req.headers.iter() {
                        if h.name.eq_ignore_ascii_case("content-length") {
                            body = std::str::from_utf8(h.value)
                                .ok()
                                .and_then(|v| v.trim().parse().ok())
                                .unwrap_or(0);
                        } else if h.name.eq_ignore_ascii_case("connection") {
                            let v = String::from_utf8_lossy(h.value).to_ascii_lowercase();
                            close = v.contains("close") || (close && !v.contains("keep-alive"));
                        }
                    }
                    break (
                        n,
                        req.method.unwrap_or("").to_string(),
                        req.path.unwrap_or("").to_string(),
                        body,
                        close,
                    );
                }
                Ok(httparse::Status::Partial) if buf.len() < 64 * 1024 => {
                    let mut chunk = [0u8; 4096];
                    let n = s.read(&mut chunk).await?;
                    if n == 0 {
                        return Ok(());
                    }
                    buf.extend_from_slice(&chunk[..n]);
                }
                _ => {
                    s.write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                        .await?;
                    return Ok(());
                }
            }
        };
        // Skip the body.
        let mut need = body_len.saturating_sub(buf.len() - head_len);
        buf.drain(..(head_len + body_len).min(buf.len()));
        let mut chunk = [0u8; 8192];
        while need > 0 {
            let n = s.read(&mut chunk[..need.min(8192)]).await?;
            if n == 0 {
                return Ok(());
            }
            need -= n;
        }
        if roll(o.fail_rate) {
            reset(&s);
            return Ok(());
        }
        if !o.delay.is_zero() {
            tokio::time::sleep(o.delay).await;
        }
        hits.fetch_add(1, Relaxed);
        let body = format!("{} {} {}\n", o.name, method, path);
        let head = format!(
            "HTTP/1.1 {} {}\r\nx-server: {}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n{}\r\n",
            o.status,
            reason(o.status),
            o.name,
            body.len(),
            if close { "connection: close\r\n" } else { "" }
        );
        // One write per response: head and body in one segment.
        let mut out = head.into_bytes();
        if method != "HEAD" {
            out.extend_from_slice(body.as_bytes());
        }
        s.write_all(&out).await?;
        if close {
            return s.shutdown().await;
        }
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Status",
    }
}
