//! Reading and writing on a socket, for both modes and the health checks:
//! non-blocking calls tried first (no timer, no clock read when the socket is
//! ready), tokio readiness when they would block, and a limit on how long a
//! wait may last.

use std::io;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::time::{Instant, timeout_at};

/// A byte stream the modes read and write: a plain socket, or a TLS session
/// over one (`Stream`). Non-blocking calls plus readiness, like tokio's
/// `TcpStream`, which implements it by forwarding.
pub trait Io: Sync {
    fn try_read_buf(&self, buf: &mut Vec<u8>) -> io::Result<usize>;
    fn try_read(&self, buf: &mut [u8]) -> io::Result<usize>;
    /// Bytes taken; a TLS session may hold some of them encrypted until a
    /// `try_flush` (which `write_all` does).
    fn try_write(&self, data: &[u8]) -> io::Result<usize>;
    fn readable(&self) -> impl Future<Output = io::Result<()>> + Send;
    fn writable(&self) -> impl Future<Output = io::Result<()>> + Send;
    /// Send what this layer holds (TLS records): `Ok(true)` once nothing is left.
    fn try_flush(&self) -> io::Result<bool> {
        Ok(true)
    }
    /// The socket underneath.
    fn socket(&self) -> &TcpStream;
    /// The socket, when bytes on it are the payload itself (splice, parking).
    fn plain(&self) -> Option<&TcpStream>;
    /// End the sending side (a TLS session says close_notify first).
    fn shutdown_write(&self) {
        let _ = socket2::SockRef::from(self.socket()).shutdown(std::net::Shutdown::Write);
    }
}

impl Io for TcpStream {
    #[inline]
    fn try_read_buf(&self, buf: &mut Vec<u8>) -> io::Result<usize> {
        TcpStream::try_read_buf(self, buf)
    }
    #[inline]
    fn try_read(&self, buf: &mut [u8]) -> io::Result<usize> {
        TcpStream::try_read(self, buf)
    }
    #[inline]
    fn try_write(&self, data: &[u8]) -> io::Result<usize> {
        TcpStream::try_write(self, data)
    }
    fn readable(&self) -> impl Future<Output = io::Result<()>> + Send {
        TcpStream::readable(self)
    }
    fn writable(&self) -> impl Future<Output = io::Result<()>> + Send {
        TcpStream::writable(self)
    }
    fn socket(&self) -> &TcpStream {
        self
    }
    fn plain(&self) -> Option<&TcpStream> {
        Some(self)
    }
}

/// Why a read or write with a limit did not complete.
#[derive(Debug)]
pub enum Failed {
    /// No progress within the limit.
    Timeout,
    /// The socket failed (reset, closed for writing, ...).
    Io(io::Error),
}

/// When waiting gives up: at a fixed instant, or after this long without
/// progress (counted from the moment the wait starts, so a call that needs no
/// wait costs no clock read and no timer).
#[derive(Debug, Clone, Copy)]
pub enum Limit {
    At(Instant),
    After(Duration),
}

impl Limit {
    fn at(self) -> Instant {
        match self {
            Limit::At(t) => t,
            Limit::After(d) => Instant::now() + d,
        }
    }
}

/// Whether this thread runs a current-thread runtime (the per-core default).
pub fn single_threaded() -> bool {
    thread_local! {
        // A worker thread runs one runtime for its life: ask tokio once, not per
        // read (each ask clones a handle: two atomic operations).
        static CURRENT_THREAD: bool = tokio::runtime::Handle::try_current()
            .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::CurrentThread);
    }
    CURRENT_THREAD.with(|c| *c)
}

/// One non-blocking read appended to `buf`. A short read emptied the socket's
/// receive queue, so its cached readiness is cleared at once (as nginx clears
/// `ready` after a short `recv`): the next wait goes straight to the poller
/// instead of paying a system call for `EAGAIN`. New bytes raise a new
/// (edge-triggered) event, so nothing is missed. Only on a current-thread
/// runtime (the per-core default), where the I/O driver never runs while this
/// task does, so no event can be cleared unseen between the read and the clear.
pub fn read_some<S: Io + ?Sized>(s: &S, buf: &mut Vec<u8>) -> io::Result<usize> {
    let room = buf.capacity() - buf.len();
    let n = s.try_read_buf(buf)?;
    if n > 0
        && n < room
        && let Some(tcp) = s.plain()
        && single_threaded()
    {
        let _ = tcp.try_io(tokio::io::Interest::READABLE, || {
            Err::<(), _>(io::ErrorKind::WouldBlock.into())
        });
    }
    Ok(n)
}

/// Append what `s` has to `buf`, waiting for readable bytes up to `limit`.
/// `Ok(0)` = end of stream. A buffer with less than 1 KiB of room is grown
/// (`buf::grow`) only once bytes are there.
pub async fn fill<S: Io + ?Sized>(s: &S, buf: &mut Vec<u8>, limit: Limit) -> Result<usize, Failed> {
    let mut deadline = None;
    loop {
        if buf.capacity() - buf.len() >= 1024 {
            // Try first: without cached readiness this is no system call, and
            // with it no timer is set up.
            match read_some(s, buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(Failed::Io(e)),
            }
        }
        let at = *deadline.get_or_insert_with(|| limit.at());
        match timeout_at(at, s.readable()).await {
            Err(_) => return Err(Failed::Timeout),
            Ok(Err(e)) => return Err(Failed::Io(e)),
            Ok(Ok(())) => {}
        }
        if buf.capacity() - buf.len() < 1024 {
            super::buf::grow(buf);
        }
        match read_some(s, buf) {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(Failed::Io(e)),
        }
    }
}

/// Read into `buf` once bytes are there (`Ok(0)` = end of stream).
pub async fn read<S: Io + ?Sized>(s: &S, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match s.try_read(buf) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => s.readable().await?,
            r => return r,
        }
    }
}

/// Write all of `data`, giving up after `limit` without progress (never, with
/// `None`); `wrote` hears of every chunk the socket took.
pub async fn write_all<S: Io + ?Sized>(
    s: &S,
    mut data: &[u8],
    limit: Option<Duration>,
    mut wrote: impl FnMut(usize),
) -> Result<(), Failed> {
    let mut deadline = None;
    loop {
        if data.is_empty() {
            // A TLS session sends the records it still holds.
            match s.try_flush() {
                Ok(true) => return Ok(()),
                Ok(false) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(Failed::Io(e)),
            }
        }
        // Try first: a socket with room takes the bytes without a wait or a timer.
        if !data.is_empty() {
            match s.try_write(data) {
                Ok(n) => {
                    data = &data[n..];
                    wrote(n);
                    continue;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(Failed::Io(e)),
            }
        }
        let ready = match limit {
            None => s.writable().await,
            Some(d) => {
                let at = *deadline.get_or_insert_with(|| Instant::now() + d);
                match timeout_at(at, s.writable()).await {
                    Err(_) => return Err(Failed::Timeout),
                    Ok(r) => r,
                }
            }
        };
        ready.map_err(Failed::Io)?;
    }
}

/// Abort a socket: close with RST instead of FIN.
pub fn reset<S: Io + ?Sized>(s: &S) {
    let _ = socket2::SockRef::from(s.socket()).set_linger(Some(Duration::ZERO));
}
