//! Test harness: in-test origins on 127.0.0.1:0, the daemon in-process, hard time
//! limits and `eventually` instead of sleeps.
#![allow(dead_code)]

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

/// Start the daemon on config text that stands for file `name` (paths in it are
/// relative to that file).
pub fn start_named(name: &str, toml: &str) -> Running {
    let cfg = fulcrum::config::parse(name, toml).unwrap_or_else(|e| panic!("{e}"));
    daemon::start(cfg).expect("daemon starts")
}

/// Start the daemon on config text (after `{name}` substitutions).
pub fn start(toml: &str, subs: &[(&str, String)]) -> Running {
    let mut text = toml.to_string();
    for (k, v) in subs {
        text = text.replace(&format!("{{{k}}}"), v);
    }
    let cfg = fulcrum::config::parse("test.toml", &text).unwrap_or_else(|e| panic!("{e}"));
    daemon::start(cfg).expect("daemon starts")
}

/// An address on which nothing listens (connections are refused).
pub async fn dead_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap()
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
