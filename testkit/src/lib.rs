//! Test harness: in-test origins on 127.0.0.1:0, the daemon in-process, hard time
//! limits and `eventually` instead of sleeps. A crate of its own (a
//! dev-dependency), so each test binary uses what it needs of it without
//! dead-code allowances.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use fulcrum::daemon::{self, Running};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

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

/// The rows of /proc/net/tcp (IPv4 sockets), split into fields.
fn proc_net_tcp() -> Vec<Vec<String>> {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    table
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().map(str::to_string).collect())
        .collect()
}

fn port_of(addr: &str) -> Option<u16> {
    addr.rsplit(':')
        .next()
        .and_then(|p| u16::from_str_radix(p, 16).ok())
}

/// The state of the local end of the connection from `local_port` to
/// `remote_port`, as the kernel shows it (0x01 established, 0x03 SYN_RECV).
pub fn tcp_state(local_port: u16, remote_port: u16) -> Option<u8> {
    proc_net_tcp().into_iter().find_map(|f| {
        (port_of(f.get(1)?) == Some(local_port) && port_of(f.get(2)?) == Some(remote_port))
            .then(|| u8::from_str_radix(f.get(3)?, 16).ok())
            .flatten()
    })
}

/// How many connections wait in the accept queue of the listener on
/// `port` (the LISTEN socket's receive queue), summed over its sockets.
pub fn accept_queue(port: u16) -> u32 {
    proc_net_tcp()
        .into_iter()
        .filter(|f| {
            f.get(1).and_then(|a| port_of(a)) == Some(port)
                && f.get(3).map(String::as_str) == Some("0A")
        })
        .filter_map(|f| {
            let (_, rx) = f.get(4)?.split_once(':')?;
            u32::from_str_radix(rx, 16).ok()
        })
        .sum()
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

/// How many of `n` fresh connections to `addr` each `Hello` origin answered
/// (by the name it says).
pub async fn hello_spread(addr: SocketAddr, n: usize) -> std::collections::HashMap<String, usize> {
    let mut m = std::collections::HashMap::new();
    for _ in 0..n {
        *m.entry(hello(addr, b"").await).or_default() += 1;
    }
    m
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
                let v6 = l.as_str().is_some_and(|a| a.starts_with('['));
                *l = toml::Value::String(if v6 { "[::1]:0" } else { "127.0.0.1:0" }.into());
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
mod conf;
mod origin;
pub mod strict;

pub use conf::{Backend, Conf, Frontend, table, value};
pub use origin::{Behaviour, Origin};

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
