//! Zero-copy pump for one direction: socket → pipe → socket with splice(2), so the
//! bytes never enter user space. Non-blocking calls, driven by tokio readiness.

#![forbid(unsafe_code)]

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::time::Duration;

use rustix::pipe::{PipeFlags, SpliceFlags};
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
        let (r, w) = rustix::pipe::pipe_with(PipeFlags::NONBLOCK | PipeFlags::CLOEXEC)?;
        Ok(Pipe { r, w })
    }
}

fn splice(from: impl AsFd, to: impl AsFd, len: usize) -> io::Result<usize> {
    // No offsets: both ends use their own position (sockets and pipes have none).
    Ok(rustix::pipe::splice(
        from,
        None,
        to,
        None,
        len,
        SpliceFlags::MOVE | SpliceFlags::NONBLOCK,
    )?)
}

/// Wait for `s` to be ready for `interest`, for at most `limit` if there is one
/// (a timeout is `TimedOut`).
async fn ready(s: &TcpStream, interest: Interest, limit: Option<Duration>) -> io::Result<()> {
    let wait = async {
        if interest == Interest::READABLE {
            s.readable().await
        } else {
            s.writable().await
        }
    };
    match limit {
        None => wait.await,
        Some(d) => tokio::time::timeout(d, wait)
            .await
            .unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into())),
    }
}

/// Socket → pipe: up to `want` bytes once `src` has some (0 = end of stream).
/// The pipe is empty when this is called, so EAGAIN can only mean the socket
/// has nothing to read.
async fn fill(
    src: &TcpStream,
    pipe: &Pipe,
    want: usize,
    limit: Option<Duration>,
) -> io::Result<usize> {
    loop {
        match src.try_io(Interest::READABLE, || splice(src, &pipe.w, want)) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                ready(src, Interest::READABLE, limit).await?;
            }
            r => return r,
        }
    }
}

/// Pipe → socket: all `left` bytes the pipe holds, reporting each move.
async fn drain(
    pipe: &Pipe,
    dst: &TcpStream,
    mut left: usize,
    limit: Option<Duration>,
    mut moved: impl FnMut(usize),
) -> io::Result<()> {
    while left > 0 {
        match dst.try_io(Interest::WRITABLE, || splice(&pipe.r, dst, left)) {
            Ok(m) => {
                left -= m;
                moved(m);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                ready(dst, Interest::WRITABLE, limit).await?;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
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
        let n = fill(src, pipe, CHUNK, None).await.map_err(DirError::Read)?;
        if n == 0 {
            return Ok(total);
        }
        act.touch();
        drain(pipe, dst, n, None, |m| {
            total += m as u64;
            tally.add(m as u64);
            act.touch();
        })
        .await
        .map_err(DirError::Write)?;
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
    limits: (Duration, Duration),
    moved: &mut u64,
) -> Result<(), ExactError> {
    let spare = PIPES.with(|p| p.borrow_mut().pop());
    let pipe = match spare {
        Some(p) => p,
        None => Pipe::new().map_err(|_| ExactError::Source)?,
    };
    while len > 0 {
        let want = usize::try_from(len).unwrap_or(CHUNK).min(CHUNK);
        let n = match fill(src, &pipe, want, Some(limits.0)).await {
            Ok(0) | Err(_) => return Err(ExactError::Source),
            Ok(n) => n,
        };
        len -= n as u64;
        drain(&pipe, dst, n, Some(limits.1), |m| *moved += m as u64)
            .await
            .map_err(|_| ExactError::Destination)?;
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
