//! Zero-copy pump for one direction: socket → pipe → socket with splice(2), so the
//! bytes never enter user space. Non-blocking calls, driven by tokio readiness.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use tokio::io::Interest;
use tokio::net::TcpStream;

use super::pump::{Activity, DirError, Tally};

/// How much one splice call may move. The kernel caps it by what the socket holds.
const CHUNK: usize = 1 << 20;

/// A kernel pipe used as the in-kernel buffer between two sockets.
pub struct Pipe {
    r: OwnedFd,
    w: OwnedFd,
}

impl Pipe {
    /// A pipe of the kernel's default size (64 KiB): larger ones measured no
    /// better on this machine (see README, Performance).
    pub fn new() -> io::Result<Pipe> {
        let mut fds = [0 as RawFd; 2];
        // SAFETY: `fds` is a valid array of two ints that pipe2 fills on success.
        let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: pipe2 succeeded, so both fds are open and owned by nobody else.
        let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        Ok(Pipe { r, w })
    }
}

fn splice(from: RawFd, to: RawFd, len: usize) -> io::Result<usize> {
    // SAFETY: both fds are open for the duration of the call (borrowed from live
    // owners by the caller); null offsets mean "use the fd's own position".
    let n = unsafe {
        libc::splice(
            from,
            std::ptr::null_mut(),
            to,
            std::ptr::null_mut(),
            len,
            libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// Move bytes from `src` to `dst` until `src` reaches end of stream.
/// Returns the number of bytes delivered to `dst`.
pub async fn pump(
    src: &TcpStream,
    dst: &TcpStream,
    pipe: &Pipe,
    act: &Activity,
    tally: &Tally<'_>,
) -> Result<u64, DirError> {
    let mut total = 0u64;
    loop {
        // Fill: socket → pipe. The pipe is empty here, so EAGAIN can only mean the
        // socket has nothing to read.
        let n = loop {
            match src.try_io(Interest::READABLE, || {
                splice(src.as_raw_fd(), pipe.w.as_raw_fd(), CHUNK)
            }) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    src.readable().await.map_err(DirError::Read)?;
                }
                Err(e) => return Err(DirError::Read(e)),
            }
        };
        if n == 0 {
            return Ok(total);
        }
        act.touch();
        // Drain: pipe → socket, until the pipe is empty again.
        let mut left = n;
        while left > 0 {
            match dst.try_io(Interest::WRITABLE, || {
                splice(pipe.r.as_raw_fd(), dst.as_raw_fd(), left)
            }) {
                Ok(m) => {
                    left -= m;
                    total += m as u64;
                    tally.add(m as u64);
                    act.touch();
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    dst.writable().await.map_err(DirError::Write)?;
                }
                Err(e) => return Err(DirError::Write(e)),
            }
        }
    }
}

/// Why `exact` stopped short.
#[derive(Debug)]
pub enum ExactError {
    /// The source failed, timed out or ended before `len` bytes.
    Source,
    /// The destination failed or timed out.
    Destination,
}

thread_local! {
    /// Empty pipes kept per worker thread for HTTP bodies.
    static PIPES: std::cell::RefCell<Vec<Pipe>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Pipes kept per thread.
const KEEP_PIPES: usize = 16;

/// Move exactly `len` bytes from `src` to `dst` through a kernel pipe (an HTTP
/// body of known length: the bytes never enter user space). `limits` =
/// (source inactivity, destination inactivity). `moved` counts what `dst`
/// took. The pipe comes from, and goes back to, this thread's spares; one left
/// holding bytes by an error is closed instead.
pub async fn exact(
    src: &TcpStream,
    dst: &TcpStream,
    mut len: u64,
    limits: (std::time::Duration, std::time::Duration),
    moved: &mut u64,
) -> Result<(), ExactError> {
    let spare = PIPES.with(|p| p.borrow_mut().pop());
    let pipe = match spare {
        Some(p) => p,
        None => Pipe::new().map_err(|_| ExactError::Source)?,
    };
    while len > 0 {
        let want = usize::try_from(len).unwrap_or(CHUNK).min(CHUNK);
        let n = loop {
            match src.try_io(Interest::READABLE, || {
                splice(src.as_raw_fd(), pipe.w.as_raw_fd(), want)
            }) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    match tokio::time::timeout(limits.0, src.readable()).await {
                        Ok(Ok(())) => {}
                        _ => return Err(ExactError::Source),
                    }
                }
                Err(_) => return Err(ExactError::Source),
            }
        };
        if n == 0 {
            return Err(ExactError::Source);
        }
        len -= n as u64;
        let mut left = n;
        while left > 0 {
            match dst.try_io(Interest::WRITABLE, || {
                splice(pipe.r.as_raw_fd(), dst.as_raw_fd(), left)
            }) {
                Ok(m) => {
                    left -= m;
                    *moved += m as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    match tokio::time::timeout(limits.1, dst.writable()).await {
                        Ok(Ok(())) => {}
                        _ => return Err(ExactError::Destination),
                    }
                }
                Err(_) => return Err(ExactError::Destination),
            }
        }
    }
    // Empty again: keep it for the next body.
    let _ = PIPES.try_with(|p| {
        if let Ok(mut p) = p.try_borrow_mut()
            && p.len() < KEEP_PIPES
        {
            p.push(pipe);
        }
    });
    Ok(())
}
