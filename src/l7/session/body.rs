//! Phases 4 and 5 of an exchange: a body streamed from one side to the other
//! (Content-Length — spliced past the buffer when large —, chunked, re-encoded
//! canonically, or until close), and the byte tunnel a WebSocket becomes after
//! a 101.

use crate::net::Stream;

use super::{Exchange, Stop};
use crate::l7::chunked::ChunkedDecoder;
use crate::net::io::{self, Io, Limit};
use crate::net::pump::{self, Activity, PumpOpts};
use crate::net::{buf, copy, splice};
use crate::runtime::BackendRt;
use crate::server::Server;

/// How a body is delimited, in either direction.
#[derive(Debug, Clone, Copy)]
pub enum Body {
    Length(u64),
    Chunked,
    /// Until the source closes (responses only).
    UntilClose,
}

#[derive(Debug)]
pub enum RelayError {
    Source,
    Destination,
    Framing,
}

/// Stream one body from `src` to `dst`: first what is already in `buf`, then
/// reads, each forwarded as it arrives. Leaves in `buf` any bytes past the body
/// (the next pipelined request). `deadlines` = (source inactivity, destination
/// inactivity); `moved` counts the bytes delivered. With `splice`, the part of
/// a Content-Length body past the buffer goes socket to socket through a kernel
/// pipe when it is larger than a large buffer (`global.splice`).
pub async fn relay<S: Io + ?Sized, D: Io + ?Sized>(
    src: &S,
    dst: &D,
    buf: &mut Vec<u8>,
    body: Body,
    deadlines: (std::time::Duration, std::time::Duration),
    moved: &mut u64,
    splice: bool,
) -> Result<(), RelayError> {
    let mut left = match body {
        Body::Length(n) => n,
        _ => u64::MAX,
    };
    let mut dec = ChunkedDecoder::default();
    let room = (buf.capacity() - buf.len()) as u64;
    // Splice only between two plain sockets (TLS bytes are decrypted here).
    let plain = src.plain().zip(dst.plain());
    let spliced = splice
        && plain.is_some()
        && matches!(body, Body::Length(n) if n > buf.len() as u64 + buf::LARGE as u64);
    if !spliced && !matches!(body, Body::Length(n) if n <= buf.len() as u64 + room) {
        // More than the buffer holds: stream through a large one.
        buf::to_large(buf);
    }
    // A chunked body is forwarded re-encoded (chunked.rs), never as received:
    // its canonical form goes out from here.
    let mut canonical = Vec::new();
    loop {
        let take = match body {
            Body::Length(_) => usize::try_from(left).unwrap_or(usize::MAX).min(buf.len()),
            Body::Chunked => {
                canonical.clear();
                dec.advance(buf, &mut canonical)
                    .map_err(|_| RelayError::Framing)?
            }
            Body::UntilClose => buf.len(),
        };
        if take > 0 {
            let out = match body {
                Body::Chunked => &canonical[..],
                _ => &buf[..take],
            };
            if !out.is_empty() {
                io::write_all(dst, out, Some(deadlines.1), |_| {})
                    .await
                    .map_err(|_| RelayError::Destination)?;
            }
            *moved += out.len() as u64;
            buf.drain(..take);
            if let Body::Length(_) = body {
                left -= take as u64;
            }
        }
        let done = match body {
            Body::Length(_) => left == 0,
            Body::Chunked => dec.is_done(),
            Body::UntilClose => false,
        };
        if done {
            return Ok(());
        }
        if spliced && let Some((src, dst)) = plain {
            // The buffer is empty (it held less than the body): the rest,
            // exactly, without copies.
            return splice::exact(src, dst, left, deadlines, moved)
                .await
                .map_err(|e| match e {
                    splice::ExactError::Source => RelayError::Source,
                    splice::ExactError::Destination => RelayError::Destination,
                });
        }
        match io::fill(src, buf, Limit::After(deadlines.0)).await {
            Ok(0) if matches!(body, Body::UntilClose) => return Ok(()),
            Ok(0) | Err(_) => return Err(RelayError::Source),
            Ok(_) => {}
        }
    }
}

impl Exchange<'_> {
    /// After a 101: both directions become a plain byte tunnel (the L4 pump,
    /// splice included). Bytes that arrived with the handshake go first.
    pub(super) async fn tunnel(
        &self,
        (upstream, backend, server): (&Stream, &BackendRt, &Server),
        cbuf: &mut Vec<u8>,
        early_down: &[u8],
    ) -> Stop {
        let (up, down) = pump::tallies(self.front, backend, server);
        let act = Activity::new();
        if copy::write_all(upstream, cbuf, &act, Some(&up))
            .await
            .is_err()
            || copy::write_all(self.client, early_down, &act, Some(&down))
                .await
                .is_err()
        {
            return Stop::Close;
        }
        cbuf.clear();
        let opts = PumpOpts {
            splice: self.opts.splice,
            idle: self.front.client_timeout.min(backend.timeouts.server),
        };
        pump::run(self.client, upstream, &opts, &up, &down).await;
        Stop::Close
    }
}
