//! Test harness: in-test origins on 127.0.0.1:0, the daemon in-process, hard time
//! limits and `eventually` instead of sleeps. A crate of its own (a
//! dev-dependency), so each test binary uses what it needs of it without
//! dead-code allowances.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fulcrum::daemon::{self, Running};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Run `f` with a hard time limit; a test that hangs fails instead.
pub async fn bounded<T>(secs: u64, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(secs), f)
        .await
        .expect("test exceeded its time limit")
}

/// Poll `cond` until it holds (or panic after `secs`).
pub async fn eventually(secs: u64, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while !cond() {
        if tokio::time::Instant::now() > deadline {
            panic!("condition never held: {what}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A directory under the system's temp dir, removed (with what is in it) when dropped.
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn new(test: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!(
            "fulcrum-{test}-{}-{}",
            std::process::id(),
            fulcrum::net::rand::fastrand_u64()
        ));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }

    pub fn join(&self, name: &str) -> std::path::PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Start the daemon on config text that stands for file `name` (paths in it are
/// relative to that file).
pub fn start_named(name: &str, toml: &str) -> Running {
    let cfg = fulcrum::config::parse(name, toml).unwrap_or_else(|e| panic!("{e}"));
    daemon::start(quiet(cfg, toml)).expect("daemon starts")
}

/// The access log goes to stdout by default: a test that does not configure
/// `[log]` keeps the test output clean.
pub fn quiet(mut cfg: fulcrum::config::Config, toml: &str) -> fulcrum::config::Config {
    if !toml.contains("[log]") {
        cfg.log.access = None;
    }
    cfg
}

/// Start the daemon on config text (after `{name}` substitutions).
pub fn start(toml: &str, subs: &[(&str, String)]) -> Running {
    let mut text = toml.to_string();
    for (k, v) in subs {
        text = text.replace(&format!("{{{k}}}"), v);
    }
    let cfg = fulcrum::config::parse("test.toml", &text).unwrap_or_else(|e| panic!("{e}"));
    daemon::start(quiet(cfg, &text)).expect("daemon starts")
}

/// An address on which nothing listens (connections are refused). The port
/// stays bound (never listening) for the rest of the test process, so no other
/// test's socket can take it meanwhile.
pub async fn dead_addr() -> SocketAddr {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    s.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .unwrap();
    let addr = s.local_addr().unwrap().as_socket().unwrap();
    std::mem::forget(s);
    addr
}

/// What a recording origin saw on one connection.
#[derive(Debug, Default, Clone)]
pub struct Seen {
    pub bytes: Vec<u8>,
}

/// A TCP origin with a behaviour per connection; counts connections and keeps
/// the bytes it received on each.
#[derive(Clone)]
pub struct Origin {
    pub addr: SocketAddr,
    pub conns: Arc<AtomicU64>,
    pub seen: Arc<Mutex<Vec<Seen>>>,
}

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
}

impl Origin {
    pub async fn start(name: &'static str, b: Behaviour) -> Origin {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let o = Origin {
            addr: l.local_addr().unwrap(),
            conns: Arc::default(),
            seen: Arc::default(),
        };
        let me = o.clone();
        tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                me.conns.fetch_add(1, Relaxed);
                let idx = {
                    let mut seen = me.seen.lock().unwrap();
                    seen.push(Seen::default());
                    seen.len() - 1
                };
                let seen = me.seen.clone();
                tokio::spawn(serve(s, name, b, seen, idx));
            }
        });
        o
    }

    /// An HTTP origin answering `answer` to every request head.
    pub async fn start_http(answer: &'static [u8]) -> Origin {
        Origin::start("http", Behaviour::Answer(answer)).await
    }

    pub fn conns(&self) -> u64 {
        self.conns.load(Relaxed)
    }

    pub fn seen(&self, i: usize) -> Vec<u8> {
        self.seen.lock().unwrap()[i].bytes.clone()
    }
}

async fn serve(
    mut s: TcpStream,
    name: &str,
    b: Behaviour,
    seen: Arc<Mutex<Vec<Seen>>>,
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
            Behaviour::Record => seen.lock().unwrap()[idx].bytes.extend_from_slice(&buf[..n]),
            Behaviour::Answer(answer) => {
                seen.lock().unwrap()[idx].bytes.extend_from_slice(&buf[..n]);
                if buf[..n].ends_with(b"\r\n\r\n") && s.write_all(answer).await.is_err() {
                    return;
                }
            }
            Behaviour::ResetOnData => {
                let _ = socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO));
                return;
            }
        }
    }
    if let Behaviour::SinkThenReport = b {
        let _ = s
            .write_all(format!("{name} got {total} bytes sum {:016x}\n", sum.0).as_bytes())
            .await;
    }
    let _ = s.shutdown().await;
}

/// FNV-1a over a byte stream: enough to tell that every byte arrived in order.
#[derive(Debug, Clone, Copy)]
pub struct Checksum(pub u64);

impl Default for Checksum {
    fn default() -> Self {
        Checksum(0xcbf2_9ce4_8422_2325)
    }
}

impl Checksum {
    pub fn update(&mut self, data: &[u8]) {
        for &b in data {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
}

/// Deterministic pseudo-random bytes (xorshift), so transfers are not all zeros.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut v = Vec::with_capacity(len);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}

/// Send `data` and read everything back until EOF.
pub async fn exchange(addr: SocketAddr, data: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(data).await.unwrap();
    s.shutdown().await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    out
}

/// Read until EOF; `Err` if the connection was reset.
pub async fn read_to_end(s: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    s.read_to_end(&mut out).await?;
    Ok(out)
}

/// Connect (optionally sending `first` bytes, e.g. a PROXY header) and return the
/// name a `Hello` origin says; the connection is closed after.
pub async fn hello(addr: SocketAddr, first: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(first).await.unwrap();
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while s.read(&mut b).await.unwrap() == 1 && b[0] != b'\n' {
        line.push(b[0]);
    }
    String::from_utf8(line).unwrap()
}

/// Like `hello`, but keeps the connection open and returns it.
pub async fn hello_open(addr: SocketAddr) -> (String, TcpStream) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while s.read(&mut b).await.unwrap() == 1 && b[0] != b'\n' {
        line.push(b[0]);
    }
    (String::from_utf8(line).unwrap(), s)
}

/// One HTTP response as a test client read it.
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    /// The head, lines as received (status line first).
    pub head: String,
    pub body: Vec<u8>,
}

impl Resp {
    /// Every value of header `name` (case-insensitive), in order.
    pub fn headers(&self, name: &str) -> Vec<String> {
        self.head
            .lines()
            .skip(1)
            .filter_map(|l| l.split_once(':'))
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim().to_string())
            .collect()
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers(name).into_iter().next()
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Write `raw` on `c` and read one response (Content-Length framed, or until
/// the connection closes). `None` when the connection closed before a response.
pub async fn roundtrip(c: &mut TcpStream, raw: &[u8]) -> Option<Resp> {
    c.write_all(raw).await.ok()?;
    read_response(c).await
}

/// Read one response from `c`.
pub async fn read_response(c: &mut TcpStream) -> Option<Resp> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let end = loop {
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
        let n = c.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..end - 4]).into_owned();
    let status = head.split(' ').nth(1)?.parse().ok()?;
    let mut body = buf[end..].to_vec();
    let len = head.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.eq_ignore_ascii_case("content-length")
            .then(|| v.trim().parse::<usize>().ok())?
    });
    match len {
        Some(len) => {
            while body.len() < len {
                let n = c.read(&mut chunk).await.ok()?;
                if n == 0 {
                    break;
                }
                body.extend_from_slice(&chunk[..n]);
            }
        }
        None => {
            let _ = c.read_to_end(&mut body).await;
        }
    }
    Some(Resp { status, head, body })
}

/// A GET on a fresh connection (with `extra` header lines, each ending in CRLF).
pub async fn get(addr: SocketAddr, path: &str, extra: &str) -> Resp {
    let mut c = TcpStream::connect(addr).await.unwrap();
    let raw = format!("GET {path} HTTP/1.1\r\nHost: test.example\r\n{extra}\r\n");
    roundtrip(&mut c, raw.as_bytes()).await.expect("a response")
}

/// The HTTP test origin: records every request it receives (raw bytes, head
/// and body) and answers it. Two ways to answer:
/// - `start(name, extra)`: keep-alive, `200` with `x-server: NAME`, the body
///   `NAME\n` and the `extra` header lines (each ending in CRLF);
/// - `replying(bytes, delay)`: after `delay`, exactly `bytes` (any status,
///   framing or garbage), then close.
#[derive(Clone)]
pub struct HttpOrigin {
    pub name: &'static str,
    pub addr: SocketAddr,
    requests: Arc<Mutex<Vec<Vec<u8>>>>,
}

/// The name most tests know the keep-alive HTTP origin by.
pub type HttpRecorder = HttpOrigin;

/// How an `HttpOrigin` answers.
#[derive(Clone, Copy)]
enum Answer {
    Named(&'static str),
    Fixed(&'static [u8], Duration),
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

impl HttpOrigin {
    pub async fn start(name: &'static str, extra: &'static str) -> HttpOrigin {
        HttpOrigin::spawn(name, Answer::Named(extra)).await
    }

    pub async fn replying(bytes: &'static [u8], delay: Duration) -> HttpOrigin {
        HttpOrigin::spawn("fixed", Answer::Fixed(bytes, delay)).await
    }

    async fn spawn(name: &'static str, answer: Answer) -> HttpOrigin {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let o = HttpOrigin {
            name,
            addr: l.local_addr().unwrap(),
            requests: Arc::default(),
        };
        let requests = o.requests.clone();
        tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                tokio::spawn(serve_http(s, name, answer, requests.clone()));
            }
        });
        o
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

    pub fn count(&self) -> usize {
        self.requests.lock().unwrap().len()
    }
}

async fn serve_http(
    mut s: TcpStream,
    name: &'static str,
    answer: Answer,
    requests: Arc<Mutex<Vec<Vec<u8>>>>,
) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let Some(end) = request_end(&buf) else {
            match s.read(&mut chunk).await {
                Ok(n) if n > 0 => buf.extend_from_slice(&chunk[..n]),
                _ => {
                    if !buf.is_empty() && matches!(answer, Answer::Fixed(..)) {
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
        match answer {
            Answer::Fixed(bytes, delay) => {
                tokio::time::sleep(delay).await;
                let _ = s.write_all(bytes).await;
                let _ = s.shutdown().await;
                return;
            }
            Answer::Named(extra) => {
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
        }
    }
}

/// An example file's text with its listeners on port 0 and its servers, in
/// order, at `addrs`.
pub fn localize_addrs(path: &str, addrs: &[SocketAddr]) -> String {
    let text =
        std::fs::read_to_string(format!("{}/../{path}", env!("CARGO_MANIFEST_DIR"))).unwrap();
    let mut doc: toml::Table = text.parse().unwrap();
    let mut next = addrs.iter();
    if let Some(toml::Value::Array(fronts)) = doc.get_mut("frontend") {
        for f in fronts {
            let listen = f.get_mut("listen").and_then(|l| l.as_array_mut()).unwrap();
            for l in listen.iter_mut() {
                *l = toml::Value::String("127.0.0.1:0".into());
            }
        }
    }
    if let Some(toml::Value::Array(backs)) = doc.get_mut("backend") {
        for b in backs {
            for s in b.get_mut("servers").and_then(|s| s.as_array_mut()).unwrap() {
                let a = next.next().expect("an address per server");
                s.as_table_mut()
                    .unwrap()
                    .insert("address".into(), toml::Value::String(a.to_string()));
            }
        }
    }
    toml::to_string(&doc).unwrap()
}
pub mod bin;
pub mod strict;

/// Mark a server up or down through the command layer (as a health check would).
pub fn set_health(d: &Running, backend: &str, server: &str, up: bool) {
    d.command(fulcrum::command::Command::SetHealth {
        backend: backend.into(),
        server: server.into(),
        up,
    })
    .unwrap_or_else(|e| panic!("{e}"));
}

/// Set a server's administrative state through the command layer.
pub fn set_state(d: &Running, backend: &str, server: &str, state: fulcrum::command::AdminState) {
    d.command(fulcrum::command::Command::SetState {
        backend: backend.into(),
        server: server.into(),
        state,
    })
    .unwrap_or_else(|e| panic!("{e}"));
}

/// The servers of `backend`, as the command layer lists them.
pub fn servers_of(d: &Running, backend: &str) -> Vec<String> {
    match d.command(fulcrum::command::Command::ShowServers {
        backend: Some(backend.into()),
    }) {
        Ok(fulcrum::command::Reply::Servers(list)) => {
            list.into_iter().map(|(_, s)| s.name).collect()
        }
        other => panic!("{other:?}"),
    }
}
