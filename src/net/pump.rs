//! Both directions of one proxied TCP connection: half-close, reset propagation,
//! the idle timeout and the forced stop at the end of a graceful shutdown.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use super::io::{Io, reset};
use super::{copy, splice};
use crate::runtime::{BackendRt, FrontendRt};
use crate::server::Server;
use crate::stats::Counter;

/// When a connection last moved a byte, in milliseconds since it started.
#[derive(Debug)]
pub struct Activity {
    start: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    pub fn new() -> Activity {
        Activity {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }

    #[inline]
    pub fn touch(&self) {
        self.last_ms
            .store(self.start.elapsed().as_millis() as u64, Relaxed);
    }

    fn idle_deadline(&self, limit: Duration) -> Instant {
        self.start + Duration::from_millis(self.last_ms.load(Relaxed)) + limit
    }
}

impl Default for Activity {
    fn default() -> Self {
        Activity::new()
    }
}

/// The counters one direction bumps for every byte delivered, plus its own total.
#[derive(Debug)]
pub struct Tally<'a> {
    counters: [&'a Counter; 3],
    total: AtomicU64,
}

impl<'a> Tally<'a> {
    pub fn new(counters: [&'a Counter; 3]) -> Self {
        Tally {
            counters,
            total: AtomicU64::new(0),
        }
    }

    #[inline]
    pub fn add(&self, n: u64) {
        self.total.fetch_add(n, Relaxed);
        for c in self.counters {
            c.add(n);
        }
    }

    pub fn total(&self) -> u64 {
        self.total.load(Relaxed)
    }
}

/// The byte counters of one proxied connection: (client → server, server → client),
/// each bumping the frontend's, the backend's and the server's.
pub fn tallies<'a>(
    front: &'a FrontendRt,
    backend: &'a BackendRt,
    server: &'a Server,
) -> (Tally<'a>, Tally<'a>) {
    let sc = &server.state.counters;
    (
        Tally::new([
            &front.counters.bytes_in,
            &backend.counters.bytes_in,
            &sc.bytes_in,
        ]),
        Tally::new([
            &front.counters.bytes_out,
            &backend.counters.bytes_out,
            &sc.bytes_out,
        ]),
    )
}

/// Which end of one direction failed.
#[derive(Debug)]
pub enum DirError {
    Read(io::Error),
    Write(io::Error),
}

/// How a proxied connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// Both sides closed their sending direction.
    Closed,
    /// The client reset or failed; the server was reset in turn.
    ClientError,
    /// The server reset or failed; the client was reset in turn.
    ServerError,
    /// No byte moved for the idle timeout.
    IdleTimeout,
    /// The graceful-stop period ran out.
    Shutdown,
}

impl End {
    pub fn as_str(self) -> &'static str {
        match self {
            End::Closed => "closed",
            End::ClientError => "client_error",
            End::ServerError => "server_error",
            End::IdleTimeout => "idle_timeout",
            End::Shutdown => "shutdown",
        }
    }
}

pub struct PumpOpts {
    pub splice: bool,
    pub idle: Duration,
}

async fn direction<S: Io + ?Sized, D: Io + ?Sized>(
    src: &S,
    dst: &D,
    opts: &PumpOpts,
    act: &Activity,
    tally: &Tally<'_>,
) -> Result<u64, DirError> {
    // Splice only between two plain sockets: TLS bytes must be decrypted.
    if opts.splice
        && let (Some(s), Some(d)) = (src.plain(), dst.plain())
        && let Ok(pipe) = splice::Pipe::new()
    {
        return splice::pump(s, d, &pipe, act, tally).await;
    }
    copy::pump(src, dst, act, tally).await
}

/// Pump until both directions are done, one side fails, or the connection
/// idles out. The daemon's stops end it from outside: callers select it
/// against their session's `Sessions::halted`.
pub async fn run<C: Io + ?Sized, S: Io + ?Sized>(
    client: &C,
    server: &S,
    opts: &PumpOpts,
    up: &Tally<'_>,
    down: &Tally<'_>,
) -> End {
    let act = Activity::new();
    let c2s = direction(client, server, opts, &act, up);
    let s2c = direction(server, client, opts, &act, down);
    tokio::pin!(c2s, s2c);
    let (mut up_done, mut down_done) = (false, false);
    let idle = async {
        loop {
            let deadline = act.idle_deadline(opts.idle);
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline.into()).await;
        }
    };
    tokio::pin!(idle);
    while !(up_done && down_done) {
        tokio::select! {
            r = &mut c2s, if !up_done => match r {
                Ok(_) => {
                    up_done = true;
                    // Half-close: the client is done sending; the server may still answer.
                    server.shutdown_write();
                }
                Err(DirError::Read(_)) => { reset(server); return End::ClientError; }
                Err(DirError::Write(_)) => { reset(client); return End::ServerError; }
            },
            r = &mut s2c, if !down_done => match r {
                Ok(_) => {
                    down_done = true;
                    client.shutdown_write();
                }
                Err(DirError::Read(_)) => { reset(client); return End::ServerError; }
                Err(DirError::Write(_)) => { reset(server); return End::ClientError; }
            },
            _ = &mut idle => return End::IdleTimeout,
        }
    }
    End::Closed
}
