//! What one exchange did, gathered as its phases run, and written at its end:
//! the server's latency buckets (`stats::latency`) and the access log line.
//!
//! Termination states (two letters, after HAProxy's): the first says who or
//! what ended the exchange — `-` nobody (a normal end), `C` the client
//! (closed or failed), `S` the server (refused, failed, malformed answer), `c`
//! a client timeout, `s` a server timeout, `P` fulcrum refused the request (a
//! malformed head, a deny, a limit), `L` fulcrum answered itself (a
//! redirect), `R` no server was available, `K` the daemon was stopping; the
//! second says in which phase — `R` the request, `Q` the queue, `C` the
//! connect, `H` the response head, `D` the body or tunnel, `-` after the end.

use std::time::{Duration, Instant, SystemTime};

use super::Exchange;
use crate::runtime::BackendRt;
use crate::server::Server;
use crate::stats::access::{Record, Short};
use crate::stats::latency::Phase;

/// One exchange's facts, filled phase by phase.
pub(super) struct Trace<'r> {
    /// When the request head was complete.
    pub started: Instant,
    pub backend: Option<&'r BackendRt>,
    pub server: Option<&'r Server>,
    pub status: u16,
    pub queued: Option<Duration>,
    pub connect: Option<Duration>,
    pub first_byte: Option<Duration>,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub retries: u32,
    pub term: [u8; 2],
    pub request_id: u64,
}

impl<'r> Trace<'r> {
    pub fn new(started: Instant, head_len: usize) -> Trace<'r> {
        Trace {
            started,
            backend: None,
            server: None,
            status: 0,
            queued: None,
            connect: None,
            first_byte: None,
            bytes_in: head_len as u64,
            bytes_out: 0,
            retries: 0,
            term: *b"--",
            request_id: 0,
        }
    }

    pub fn end(&mut self, who: u8, phase: u8) {
        self.term = [who, phase];
    }
}

/// The request line as the log shows it.
pub(super) struct Line<'a> {
    pub method: &'a str,
    pub host: &'a str,
    /// The path, with the query when it is to be logged.
    pub target: &'a str,
}

impl Line<'_> {
    /// What can be read of a head that was refused: the first two words of
    /// its first line.
    pub fn of_raw(input: &[u8]) -> Line<'_> {
        let first = input.split(|&b| b == b'\n').next().unwrap_or_default();
        let mut words = first
            .split(|&b| b == b' ')
            .map(|w| std::str::from_utf8(w).unwrap_or("?"));
        Line {
            method: words.next().unwrap_or(""),
            host: "",
            target: words.next().unwrap_or(""),
        }
    }
}

fn us(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

impl Exchange<'_> {
    /// The exchange is over: its latencies to the server's buckets, its line
    /// to the access log.
    pub(super) fn finish(&self, t: &Trace<'_>, line: &Line<'_>) {
        let total = t.started.elapsed();
        // Only exchanges that reached a server count in its latency.
        if self.opts.histograms
            && let (Some(s), Some(connect)) = (t.server, t.connect)
        {
            let rec = &s.state.latency;
            rec.record(Phase::Queue, t.queued.unwrap_or_default());
            rec.record(Phase::Connect, connect);
            if let Some(fb) = t.first_byte {
                rec.record(Phase::FirstByte, fb);
            }
            rec.record(Phase::Total, total);
        }
        let Some(log) = &self.opts.access_log else {
            return;
        };
        let target = if log.query {
            line.target
        } else {
            line.target.split_once('?').map_or(line.target, |(p, _)| p)
        };
        let mut r = Record {
            at: Some(SystemTime::now() - total),
            client: Some(self.peer.client),
            frontend: Short::new(&self.front.name),
            method: Short::new(line.method),
            host: Short::new(line.host),
            path: Short::new(target),
            status: t.status,
            bytes_in: t.bytes_in,
            bytes_out: t.bytes_out,
            queue_us: t.queued.map(us),
            connect_us: t.connect.map(us),
            first_byte_us: t.first_byte.map(us),
            total_us: us(total),
            retries: t.retries,
            term: t.term,
            request_id: t.request_id,
            ..Record::default()
        };
        if let Some(b) = t.backend {
            r.backend.set(&b.name);
        }
        if let Some(s) = t.server {
            r.server.set(&s.name);
        }
        log.log(r);
    }
}
