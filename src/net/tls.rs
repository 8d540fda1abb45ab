//! The TLS arm of `Stream`: a rustls server session driven over a non-blocking
//! socket, with the same calls as the plain arm (`Io`), so both modes read
//! and write it unchanged. rustls is a state machine without I/O: bytes read
//! from the socket go in (`read_tls`), records to send come out (`write_tls`),
//! plaintext sits between. The session is behind an uncontended mutex so the
//! two directions of a tunnel can share it; no lock is held across a wait.

use std::io::{self, Read, Write};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rustls::Connection;
use tokio::net::TcpStream;

use super::io::Io;

/// Encrypted output held before writes report `WouldBlock` (back-pressure).
const MAX_PENDING: usize = 64 * 1024;

/// What the handshake settled, for routing and the logs.
#[derive(Debug, Clone, Default)]
pub struct TlsInfo {
    /// The name the client asked for (SNI), lower-cased.
    pub sni: Option<Box<str>>,
    /// A client certificate was presented and verified (mTLS).
    pub client_verified: bool,
    /// "TLSv1.2" or "TLSv1.3".
    pub version: &'static str,
    /// The session was resumed (ticket or cache).
    pub resumed: bool,
}

/// A TLS session on a socket, past its handshake: a client's (fulcrum as the
/// server) or a server's (fulcrum as the client, `connect`).
pub struct TlsConn {
    tcp: TcpStream,
    tls: Mutex<Connection>,
    pub info: TlsInfo,
}

impl std::fmt::Debug for TlsConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConn").field("info", &self.info).finish()
    }
}

/// The socket as `Read`/`Write` for rustls, non-blocking.
struct Sock<'a>(&'a TcpStream);

impl Read for Sock<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.try_read(buf)
    }
}

impl Write for Sock<'_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.0.try_write(data)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn tls_error(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

/// Why a handshake did not complete.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("TLS handshake: {0}")]
    Tls(#[from] rustls::Error),
    #[error("TLS handshake: {0}")]
    Io(#[from] io::Error),
    #[error("TLS handshake: not done within the handshake timeout")]
    Timeout,
    #[error("TLS handshake: the client closed")]
    Closed,
}

/// Send every record `c` holds, waiting for the socket as needed.
async fn flush_all(tcp: &TcpStream, c: &mut Connection) -> io::Result<()> {
    while c.wants_write() {
        match c.write_tls(&mut Sock(tcp)) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => tcp.writable().await?,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Run the server side of a handshake on `tcp` (after `early`, bytes already
/// read from it, such as those past a PROXY header), within `limit`.
pub async fn accept(
    tcp: TcpStream,
    config: Arc<rustls::ServerConfig>,
    early: &[u8],
    limit: Duration,
) -> Result<TlsConn, HandshakeError> {
    let mut c = Connection::Server(rustls::ServerConnection::new(config)?);
    let mut early = early;
    while !early.is_empty() {
        c.read_tls(&mut early)?;
        c.process_new_packets()?;
    }
    handshake(&tcp, &mut c, limit).await?;
    let sni = match &c {
        Connection::Server(s) => s.server_name().map(|s| s.to_ascii_lowercase().into()),
        Connection::Client(_) => None,
    };
    Ok(TlsConn::new(tcp, c, sni))
}

/// Run the client side of a handshake with a server on `tcp`, within `limit`.
pub async fn connect(
    tcp: TcpStream,
    config: Arc<rustls::ClientConfig>,
    name: rustls::pki_types::ServerName<'static>,
    limit: Duration,
) -> Result<TlsConn, HandshakeError> {
    let mut c = Connection::Client(rustls::ClientConnection::new(config, name)?);
    handshake(&tcp, &mut c, limit).await?;
    Ok(TlsConn::new(tcp, c, None))
}

/// The client handshake with server `addr` on `tcp` as `tls` says, within
/// `limit` (live traffic and health checks alike).
pub async fn connect_upstream(
    tls: &crate::tls::UpstreamTls,
    tcp: TcpStream,
    addr: std::net::SocketAddr,
    limit: Duration,
) -> Result<super::Stream, HandshakeError> {
    connect(tcp, tls.config.clone(), tls.name_for(addr), limit)
        .await
        .map(|t| super::Stream::Tls(Box::new(t)))
}

/// Exchange handshake records until the session is established.
async fn handshake(
    tcp: &TcpStream,
    c: &mut Connection,
    limit: Duration,
) -> Result<(), HandshakeError> {
    c.set_buffer_limit(Some(MAX_PENDING));
    let run = async {
        loop {
            flush_all(tcp, c).await?;
            if !c.is_handshaking() {
                return Ok(());
            }
            match c.read_tls(&mut Sock(tcp)) {
                Ok(0) => return Err(HandshakeError::Closed),
                Ok(_) => {
                    if let Err(e) = c.process_new_packets() {
                        // The alert that says why, best effort.
                        let _ = c.write_tls(&mut Sock(tcp));
                        return Err(e.into());
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => tcp.readable().await?,
                Err(e) => return Err(e.into()),
            }
        }
    };
    match tokio::time::timeout(limit, run).await {
        Err(_) => Err(HandshakeError::Timeout),
        Ok(r) => r,
    }
}

impl TlsConn {
    fn new(tcp: TcpStream, c: Connection, sni: Option<Box<str>>) -> TlsConn {
        let info = TlsInfo {
            sni,
            client_verified: matches!(c, Connection::Server(_))
                && c.peer_certificates().is_some_and(|p| !p.is_empty()),
            version: match c.protocol_version() {
                Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3",
                Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2",
                _ => "",
            },
            resumed: matches!(c.handshake_kind(), Some(rustls::HandshakeKind::Resumed)),
        };
        TlsConn {
            tcp,
            tls: Mutex::new(c),
            info,
        }
    }
}

/// The longest ClientHello read for SNI routing.
const MAX_HELLO: usize = 16 * 1024;

/// Read the client's first bytes into `early` until they hold a whole
/// ClientHello (at most 16 KiB, for at most `limit`) and return its server
/// name (`Some(None)`: a ClientHello without SNI). `None`: not TLS, too long
/// or too slow. What was read stays in `early` either way.
pub async fn peek_sni(
    tcp: &TcpStream,
    early: &mut Vec<u8>,
    limit: Duration,
) -> Option<Option<Box<str>>> {
    let mut acceptor = rustls::server::Acceptor::default();
    let mut fed = 0;
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        while fed < early.len() {
            let mut rest = &early[fed..];
            match acceptor.read_tls(&mut rest) {
                Ok(0) | Err(_) => return None,
                Ok(n) => fed += n,
            }
        }
        match acceptor.accept() {
            Ok(Some(hello)) => {
                let name = hello
                    .client_hello()
                    .server_name()
                    .map(str::to_ascii_lowercase);
                return Some(name.map(Into::into));
            }
            Ok(None) => {}
            Err(_) => return None,
        }
        if early.len() >= MAX_HELLO {
            return None;
        }
        early.reserve(4096);
        match super::io::fill(tcp, early, super::io::Limit::At(deadline)).await {
            Ok(n) if n > 0 => {}
            _ => return None,
        }
    }
}

impl TlsConn {
    fn lock(&self) -> MutexGuard<'_, Connection> {
        self.tls.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Send what can go now: `Ok(true)` once nothing is held.
    fn push(&self, c: &mut Connection) -> io::Result<bool> {
        while c.wants_write() {
            match c.write_tls(&mut Sock(&self.tcp)) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    /// Plaintext ready to read, or the session's end (`Some(0)`), reading
    /// records from the socket as needed; `WouldBlock` when it has none.
    fn ready_plaintext(&self, c: &mut Connection) -> io::Result<usize> {
        loop {
            let state = c.process_new_packets().map_err(|e| {
                let _ = c.write_tls(&mut Sock(&self.tcp));
                tls_error(e)
            })?;
            let n = state.plaintext_bytes_to_read();
            if n > 0 {
                return Ok(n);
            }
            if state.peer_has_closed() {
                return Ok(0);
            }
            // Records rustls produced on its own (alerts, key updates).
            self.push(c)?;
            match c.read_tls(&mut Sock(&self.tcp)) {
                // The socket ended (with or without close_notify): the end.
                Ok(0) => return Ok(0),
                Ok(_) => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Whether plaintext (or the end) is waiting without reading the socket.
    fn buffered(&self) -> bool {
        let mut c = self.lock();
        c.process_new_packets()
            .map(|s| s.plaintext_bytes_to_read() > 0 || s.peer_has_closed())
            .unwrap_or(true)
    }
}

impl Drop for TlsConn {
    /// The session ends with close_notify (best effort, without waiting):
    /// clients such as OpenSSL 3 take a bare TCP close for a truncation.
    fn drop(&mut self) {
        let c = self.tls.get_mut().unwrap_or_else(|e| e.into_inner());
        c.send_close_notify();
        while c.wants_write() {
            if c.write_tls(&mut Sock(&self.tcp)).is_err() {
                break;
            }
        }
    }
}

impl Io for TlsConn {
    fn try_read_buf(&self, buf: &mut Vec<u8>) -> io::Result<usize> {
        let mut c = self.lock();
        let avail = self.ready_plaintext(&mut c)?;
        let room = buf.capacity() - buf.len();
        let n = avail.min(room);
        if n == 0 {
            return Ok(0);
        }
        // Only as much as is there is zeroed, then filled.
        let len = buf.len();
        buf.resize(len + n, 0);
        let got = c.reader().read(&mut buf[len..]);
        let got = match got {
            Ok(got) => got,
            Err(e) => {
                buf.truncate(len);
                return Err(e);
            }
        };
        buf.truncate(len + got);
        Ok(got)
    }

    fn try_read(&self, buf: &mut [u8]) -> io::Result<usize> {
        let mut c = self.lock();
        if self.ready_plaintext(&mut c)? == 0 || buf.is_empty() {
            return Ok(0);
        }
        c.reader().read(buf)
    }

    fn try_write(&self, data: &[u8]) -> io::Result<usize> {
        let mut c = self.lock();
        self.push(&mut c)?;
        let n = c.writer().write(data)?;
        self.push(&mut c)?;
        if n == 0 && !data.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(n)
    }

    async fn readable(&self) -> io::Result<()> {
        if self.buffered() {
            return Ok(());
        }
        self.tcp.readable().await
    }

    async fn writable(&self) -> io::Result<()> {
        if !self.lock().wants_write() {
            return Ok(());
        }
        self.tcp.writable().await
    }

    fn try_flush(&self) -> io::Result<bool> {
        let mut c = self.lock();
        self.push(&mut c)
    }

    fn socket(&self) -> &TcpStream {
        &self.tcp
    }

    fn plain(&self) -> Option<&TcpStream> {
        None
    }

    fn shutdown_write(&self) {
        let mut c = self.lock();
        c.send_close_notify();
        let _ = self.push(&mut c);
        let _ = socket2::SockRef::from(&self.tcp).shutdown(std::net::Shutdown::Write);
    }
}
