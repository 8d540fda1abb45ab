//! The transport layer both modes (and, next, the health checks) stand on:
//! what a connection is (`Stream`), what it holds for its life (`Conn`),
//! reading and writing with limits (`io`), read buffers (`buf`), the
//! splice/copy pumps (`pump`, `splice`, `copy`), the PROXY protocol codec and
//! the random draw.
//!
//! `Stream` is a closed enum, a `Tcp` arm and a `Tls` arm (`tls`), both read
//! and written through `io::Io`: splice is offered only where both ends are
//! plain TCP, as HAProxy's transport layer offers pipes only on raw sockets.

pub mod buf;
pub mod conn;
pub mod copy;
pub mod io;
pub mod proxy_protocol;
pub mod pump;
pub mod rand;
pub mod splice;
pub mod tls;

pub use conn::{Conn, ConnOpts};

use std::net::SocketAddr;

use tokio::net::TcpStream;

/// A client connection as the accept pipeline hands it to a mode.
#[derive(Debug)]
pub enum Stream {
    Tcp(TcpStream),
    Tls(Box<tls::TlsConn>),
}

impl Stream {
    /// What the TLS handshake settled (`None`: plain TCP).
    pub fn tls(&self) -> Option<&tls::TlsInfo> {
        match self {
            Stream::Tcp(_) => None,
            Stream::Tls(t) => Some(&t.info),
        }
    }
}

impl io::Io for Stream {
    #[inline]
    fn try_read_buf(&self, buf: &mut Vec<u8>) -> std::io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.try_read_buf(buf),
            Stream::Tls(t) => t.try_read_buf(buf),
        }
    }
    #[inline]
    fn try_read(&self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.try_read(buf),
            Stream::Tls(t) => io::Io::try_read(&**t, buf),
        }
    }
    #[inline]
    fn try_write(&self, data: &[u8]) -> std::io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.try_write(data),
            Stream::Tls(t) => io::Io::try_write(&**t, data),
        }
    }
    async fn readable(&self) -> std::io::Result<()> {
        match self {
            Stream::Tcp(s) => s.readable().await,
            Stream::Tls(t) => io::Io::readable(&**t).await,
        }
    }
    async fn writable(&self) -> std::io::Result<()> {
        match self {
            Stream::Tcp(s) => s.writable().await,
            Stream::Tls(t) => io::Io::writable(&**t).await,
        }
    }
    #[inline]
    fn try_flush(&self) -> std::io::Result<bool> {
        match self {
            Stream::Tcp(_) => Ok(true),
            Stream::Tls(t) => t.try_flush(),
        }
    }
    #[inline]
    fn socket(&self) -> &TcpStream {
        match self {
            Stream::Tcp(s) => s,
            Stream::Tls(t) => t.socket(),
        }
    }
    #[inline]
    fn plain(&self) -> Option<&TcpStream> {
        match self {
            Stream::Tcp(s) => Some(s),
            Stream::Tls(_) => None,
        }
    }
    fn shutdown_write(&self) {
        match self {
            Stream::Tcp(s) => io::Io::shutdown_write(s),
            Stream::Tls(t) => t.shutdown_write(),
        }
    }
}

/// What the accept pipeline learned before handing the connection over.
#[derive(Debug)]
pub struct Accepted {
    pub stream: Stream,
    /// The client: the socket's peer, or the PROXY header's source.
    pub client: SocketAddr,
    /// Where the client connected: the listener's address, or the PROXY
    /// header's destination.
    pub local: SocketAddr,
    /// Bytes the client sent right after its PROXY header.
    pub early: Vec<u8>,
    /// The source's requests count against `req_rate_per_source`.
    pub rate_limited: bool,
    /// tcp SNI routing: what the ClientHello asked for (its bytes are in
    /// `early`, to go to the server untouched).
    pub sni: Option<tls::TlsInfo>,
}
