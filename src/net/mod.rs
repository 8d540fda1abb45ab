//! The transport layer both modes (and, next, the health checks) stand on:
//! what a connection is (`Stream`), what it holds for its life (`Conn`),
//! reading and writing with limits (`io`), read buffers (`buf`), the
//! splice/copy pumps (`pump`, `splice`, `copy`), the PROXY protocol codec and
//! the random draw.
//!
//! `Stream` is a closed enum with one `Tcp` arm now and room for a `Tls` arm:
//! splice is offered only where both ends are plain TCP, as HAProxy's transport
//! layer offers pipes only on raw sockets.

pub mod buf;
pub mod conn;
pub mod copy;
pub mod io;
pub mod proxy_protocol;
pub mod pump;
pub mod rand;
pub mod splice;

pub use conn::{Conn, ConnOpts};

use std::net::SocketAddr;

use tokio::net::TcpStream;

/// A client connection as the accept pipeline hands it to a mode.
#[derive(Debug)]
pub enum Stream {
    Tcp(TcpStream),
}

impl Stream {
    /// The plain TCP socket (every stream is one until TLS lands).
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Tcp(s) => s,
        }
    }

    pub fn into_tcp(self) -> TcpStream {
        match self {
            Stream::Tcp(s) => s,
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
}
