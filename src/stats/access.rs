//! The access log: one line per request (http) or connection (tcp), written
//! by a thread of its own.
//!
//! A traffic thread fills a fixed-size `Record` (text fields copied inline, no
//! allocation) and offers it by value to a bounded channel (8,192 records of
//! 520 bytes; a path longer than 255 bytes is cut, marked with `~`); when the channel is full the line is dropped and counted
//! (`log_dropped`), never waited for. The writer wakes every 20 ms, formats
//! what is queued as text or JSON into a buffer, and writes it when the
//! queue is empty (or every 64 KiB). `reopen()` (SIGUSR1) makes it
//! reopen its file, for logrotate.

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, TrySendError};
use std::time::{Duration, SystemTime};

use super::GlobalCounters;
pub use crate::config::{LogFormat as Format, LogTarget as Target};

/// Text copied into a record, cut at `N` bytes (a cut value ends with `~`).
#[derive(Clone, Copy)]
pub struct Short<const N: usize> {
    len: u16,
    bytes: [u8; N],
}

impl<const N: usize> Default for Short<N> {
    fn default() -> Self {
        Short {
            len: 0,
            bytes: [0; N],
        }
    }
}

impl<const N: usize> std::fmt::Debug for Short<N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.as_str())
    }
}

impl<const N: usize> Short<N> {
    pub fn new(s: &str) -> Self {
        let mut out = Short::default();
        out.set(s);
        out
    }

    pub fn set(&mut self, s: &str) {
        let b = s.as_bytes();
        let n = if b.len() <= N {
            b.len()
        } else {
            // Cut on a character boundary, keeping room for the mark.
            let mut n = N - 1;
            while !s.is_char_boundary(n) {
                n -= 1;
            }
            n
        };
        self.bytes[..n].copy_from_slice(&b[..n]);
        let mut len = n;
        if n < b.len() {
            self.bytes[n] = b'~';
            len += 1;
        }
        self.len = len as u16;
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.bytes[..usize::from(self.len)]).unwrap_or("")
    }
}

/// One line's facts. Times are microseconds; `None` where the phase was not
/// reached.
#[derive(Debug, Clone, Copy, Default)]
pub struct Record {
    /// When the request (http) or connection (tcp) began.
    pub at: Option<SystemTime>,
    pub client: Option<SocketAddr>,
    pub tcp: bool,
    pub frontend: Short<32>,
    pub backend: Short<32>,
    pub server: Short<32>,
    pub method: Short<16>,
    pub host: Short<64>,
    pub path: Short<256>,
    /// The status sent to the client (0 in tcp mode, or when none was sent).
    pub status: u16,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub queue_us: Option<u64>,
    pub connect_us: Option<u64>,
    pub first_byte_us: Option<u64>,
    pub total_us: u64,
    pub retries: u32,
    /// How it ended: who (`-` normally) and in which phase (see docs/observability.md).
    pub term: [u8; 2],
    /// The request id sent to the server (0: none).
    pub request_id: u64,
}

/// The sending side, held by every traffic thread.
#[derive(Debug)]
pub struct AccessLog {
    tx: SyncSender<Record>,
    /// Log the query string with the path.
    pub query: bool,
    reopen: Arc<AtomicBool>,
    closing: Arc<AtomicBool>,
    counters: Arc<GlobalCounters>,
    writer: std::thread::Thread,
}

/// Records the channel holds before lines are dropped: 8,192, 80 ms of lines
/// at 100,000 requests a second.
const QUEUE: usize = 8192;
/// The writer drains the queue this often, and writes when its buffer reaches
/// `FLUSH_AT` or the queue is empty.
const DRAIN_EVERY: Duration = Duration::from_millis(20);
const FLUSH_AT: usize = 64 * 1024;

impl AccessLog {
    /// Open `target` and start the writer thread.
    pub fn start(
        target: Target,
        format: Format,
        query: bool,
        counters: Arc<GlobalCounters>,
    ) -> std::io::Result<(AccessLog, std::thread::JoinHandle<()>)> {
        let out = open(&target)?;
        let (tx, rx) = std::sync::mpsc::sync_channel(QUEUE);
        let reopen = Arc::new(AtomicBool::new(false));
        let closing = Arc::new(AtomicBool::new(false));
        let writer = Writer {
            target,
            format,
            clock: Clock::default(),
            lines: 0,
            out,
            reopen: reopen.clone(),
            closing: closing.clone(),
            counters: counters.clone(),
        };
        let handle = std::thread::Builder::new()
            .name("fulcrum-log".into())
            .spawn(move || writer.run(rx))?;
        Ok((
            AccessLog {
                tx,
                query,
                reopen,
                closing,
                counters,
                writer: handle.thread().clone(),
            },
            handle,
        ))
    }

    /// Offer a line; dropped and counted when the writer is behind.
    pub fn log(&self, r: Record) {
        match self.tx.try_send(r) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.counters.log_dropped.inc();
            }
        }
    }

    /// Reopen the file before the next write (after logrotate moved it).
    pub fn reopen(&self) {
        self.reopen.store(true, Relaxed);
    }

    /// Write what is queued and stop (the daemon is done).
    pub fn close(&self) {
        self.closing.store(true, Relaxed);
        self.writer.unpark();
    }
}

fn open(target: &Target) -> std::io::Result<Box<dyn std::io::Write + Send>> {
    Ok(match target {
        Target::Stdout => Box::new(std::io::stdout()),
        Target::File(p) => Box::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)?,
        ),
    })
}

struct Writer {
    target: Target,
    format: Format,
    clock: Clock,
    /// Lines formatted since the counter was last bumped.
    lines: u64,
    out: Box<dyn std::io::Write + Send>,
    reopen: Arc<AtomicBool>,
    closing: Arc<AtomicBool>,
    counters: Arc<GlobalCounters>,
}

impl Writer {
    /// Every `DRAIN_EVERY` (or when woken to close): take every queued record,
    /// format, write. The writer never blocks on the queue, so a traffic
    /// thread's `try_send` never has a sleeping receiver to wake: no system
    /// call and no thread switch per line.
    fn run(mut self, rx: Receiver<Record>) {
        let mut buf = String::with_capacity(FLUSH_AT + 4096);
        loop {
            let closing = self.closing.load(Relaxed);
            let gone = loop {
                match rx.try_recv() {
                    Ok(r) => {
                        self.line(&r, &mut buf);
                        if buf.len() >= FLUSH_AT {
                            self.write(&mut buf);
                        }
                    }
                    Err(TryRecvError::Empty) => break false,
                    Err(TryRecvError::Disconnected) => break true,
                }
            };
            self.check_reopen();
            self.write(&mut buf);
            if gone || closing {
                return;
            }
            std::thread::park_timeout(DRAIN_EVERY);
        }
    }

    fn write(&mut self, buf: &mut String) {
        self.counters.log_lines.add(std::mem::take(&mut self.lines));
        if buf.is_empty() {
            return;
        }
        if let Err(e) = self
            .out
            .write_all(buf.as_bytes())
            .and_then(|()| self.out.flush())
        {
            tracing::warn!(error = %e, "access log: cannot write");
        }
        buf.clear();
    }

    fn line(&mut self, r: &Record, buf: &mut String) {
        match self.format {
            Format::Text => text(r, &mut self.clock, buf),
            Format::Json => json(r, buf),
        }
        buf.push('\n');
        self.lines += 1;
    }

    fn check_reopen(&mut self) {
        if !self.reopen.swap(false, Relaxed) || self.target == Target::Stdout {
            return;
        }
        match open(&self.target) {
            Ok(out) => {
                let _ = self.out.flush();
                self.out = out;
                tracing::info!("access log reopened");
            }
            Err(e) => tracing::warn!(error = %e, "access log: cannot reopen, keeping the old file"),
        }
    }
}

/// RFC 3339 UTC with milliseconds.
pub fn rfc3339(t: SystemTime, out: &mut String) {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let _ = write!(
        out,
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    );
}

/// The time prefix of the current second (`2026-12-06T14:22:41.`), computed
/// once per second instead of once per line.
#[derive(Default)]
struct Clock {
    second: Option<u64>,
    prefix: String,
}

impl Clock {
    fn stamp(&mut self, t: SystemTime, out: &mut String) {
        let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
        if self.second != Some(d.as_secs()) {
            self.second = Some(d.as_secs());
            self.prefix.clear();
            rfc3339(
                SystemTime::UNIX_EPOCH + Duration::from_secs(d.as_secs()),
                &mut self.prefix,
            );
            // "...:41.000Z" -> "...:41."
            self.prefix.truncate(self.prefix.len() - 4);
        }
        out.push_str(&self.prefix);
        pad3(d.subsec_millis(), out);
        out.push('Z');
    }
}

fn num(v: impl itoa::Integer, out: &mut String) {
    out.push_str(itoa::Buffer::new().format(v));
}

/// 0..=999 with three digits.
fn pad3(v: u32, out: &mut String) {
    let v = v.min(999);
    out.push(char::from(b'0' + (v / 100) as u8));
    out.push(char::from(b'0' + (v / 10 % 10) as u8));
    out.push(char::from(b'0' + (v % 10) as u8));
}

/// Milliseconds with three decimals, `-1` for a phase not reached.
fn ms(v: Option<u64>, out: &mut String) {
    match v {
        Some(us) => {
            num(us / 1000, out);
            out.push('.');
            pad3((us % 1000) as u32, out);
        }
        None => out.push_str("-1"),
    }
}

fn addr(a: SocketAddr, out: &mut String) {
    match a {
        SocketAddr::V4(v4) => {
            for (i, o) in v4.ip().octets().iter().enumerate() {
                if i > 0 {
                    out.push('.');
                }
                num(*o, out);
            }
            out.push(':');
            num(v4.port(), out);
        }
        SocketAddr::V6(_) => {
            let _ = write!(out, "{a}");
        }
    }
}

fn or_dash(s: &str) -> &str {
    if s.is_empty() { "-" } else { s }
}

/// `time client frontend backend/server status bytes_in bytes_out
/// queue/connect/first_byte/total retries term id "method host path"`.
fn text(r: &Record, clock: &mut Clock, out: &mut String) {
    clock.stamp(r.at.unwrap_or(SystemTime::UNIX_EPOCH), out);
    out.push(' ');
    match r.client {
        Some(c) => addr(c, out),
        None => out.push('-'),
    }
    out.push(' ');
    out.push_str(or_dash(r.frontend.as_str()));
    out.push(' ');
    out.push_str(or_dash(r.backend.as_str()));
    out.push('/');
    out.push_str(or_dash(r.server.as_str()));
    for v in [u64::from(r.status), r.bytes_in, r.bytes_out] {
        out.push(' ');
        num(v, out);
    }
    out.push(' ');
    ms(r.queue_us, out);
    out.push('/');
    ms(r.connect_us, out);
    out.push('/');
    ms(r.first_byte_us, out);
    out.push('/');
    ms(Some(r.total_us), out);
    out.push(' ');
    num(r.retries, out);
    out.push(' ');
    out.push_str(std::str::from_utf8(&r.term).unwrap_or("??"));
    out.push(' ');
    if r.request_id == 0 {
        out.push('-');
    } else {
        let _ = write!(out, "{:016x}", r.request_id);
    }
    if r.tcp {
        out.push_str(" \"tcp\"");
    } else {
        // The request line as received, with the host; quotes and controls escaped.
        out.push_str(" \"");
        escape_text(r.method.as_str(), out);
        out.push(' ');
        escape_text(r.host.as_str(), out);
        escape_text(r.path.as_str(), out);
        out.push('"');
    }
}

fn escape_text(s: &str, out: &mut String) {
    let plain = |b: u8| b >= 0x20 && b != 0x7f && b != b'"' && b != b'\\';
    if s.bytes().all(plain) {
        out.push_str(s);
        return;
    }
    for c in s.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            c if c.is_control() => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c => out.push(c),
        }
    }
}

fn json(r: &Record, out: &mut String) {
    let mut time = String::with_capacity(32);
    rfc3339(r.at.unwrap_or(SystemTime::UNIX_EPOCH), &mut time);
    let opt = |v: Option<u64>| v.map(|us| us as f64 / 1000.0);
    let id = (r.request_id != 0).then(|| format!("{:016x}", r.request_id));
    let v = serde_json::json!({
        "time": time,
        "client": r.client.map(|c| c.to_string()),
        "mode": if r.tcp { "tcp" } else { "http" },
        "frontend": r.frontend.as_str(),
        "backend": r.backend.as_str(),
        "server": r.server.as_str(),
        "method": r.method.as_str(),
        "host": r.host.as_str(),
        "path": r.path.as_str(),
        "status": r.status,
        "bytes_in": r.bytes_in,
        "bytes_out": r.bytes_out,
        "queue_ms": opt(r.queue_us),
        "connect_ms": opt(r.connect_us),
        "first_byte_ms": opt(r.first_byte_us),
        "total_ms": r.total_us as f64 / 1000.0,
        "retries": r.retries,
        "termination": std::str::from_utf8(&r.term).unwrap_or("??"),
        "request_id": id,
    });
    let _ = write!(out, "{v}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_queue_drops_and_counts_instead_of_waiting() {
        // No writer: the queue fills and stays full.
        let (tx, rx) = std::sync::mpsc::sync_channel(2);
        let counters = Arc::new(GlobalCounters::default());
        let log = AccessLog {
            tx,
            query: false,
            reopen: Arc::default(),
            closing: Arc::default(),
            counters: counters.clone(),
            writer: std::thread::current(),
        };
        for _ in 0..5 {
            log.log(sample());
        }
        assert_eq!(counters.log_dropped.get(), 3);
        assert_eq!(rx.try_iter().count(), 2);
    }

    #[test]
    fn dates_are_rfc3339_utc() {
        let mut s = String::new();
        rfc3339(SystemTime::UNIX_EPOCH, &mut s);
        assert_eq!(s, "1970-01-01T00:00:00.000Z");
        s.clear();
        // 2024-02-29T23:59:58.250Z: a leap day.
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_709_251_198_250);
        rfc3339(t, &mut s);
        assert_eq!(s, "2024-02-29T23:59:58.250Z");
        s.clear();
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(4_102_444_800);
        rfc3339(t, &mut s);
        assert_eq!(s, "2100-01-01T00:00:00.000Z");
    }

    #[test]
    fn the_cached_second_gives_the_same_stamp_as_a_full_format() {
        let mut clock = Clock::default();
        for ms in [
            0u64,
            999,
            1_000,
            1_001,
            59_999,
            86_399_999,
            86_400_000,
            1_709_251_198_250,
        ] {
            let t = SystemTime::UNIX_EPOCH + Duration::from_millis(ms);
            let (mut a, mut b) = (String::new(), String::new());
            clock.stamp(t, &mut a);
            rfc3339(t, &mut b);
            assert_eq!(a, b, "{ms}");
        }
        let mut out = String::new();
        escape_text("/a\"b\\c\u{1}d", &mut out);
        assert_eq!(out, "/a\\\"b\\\\c\\x01d");
        out.clear();
        addr("[::1]:80".parse().unwrap(), &mut out);
        assert_eq!(out, "[::1]:80");
    }

    #[test]
    fn long_text_is_cut_on_a_character_with_a_mark() {
        let s: Short<8> = Short::new("/abcdéfgh");
        assert_eq!(s.as_str(), "/abcdé~");
        let s: Short<7> = Short::new("/abcdéfgh");
        assert_eq!(s.as_str(), "/abcd~", "é does not fit: cut before it");
        assert_eq!(Short::<8>::new("/abc").as_str(), "/abc");
        assert_eq!(Short::<4>::new("/abc").as_str(), "/abc");
        assert_eq!(Short::<4>::new("/abcd").as_str(), "/ab~");
    }

    fn sample() -> Record {
        Record {
            at: Some(SystemTime::UNIX_EPOCH + Duration::from_secs(86_400)),
            client: Some("127.0.0.1:5000".parse().unwrap()),
            frontend: Short::new("web"),
            backend: Short::new("app"),
            server: Short::new("a"),
            method: Short::new("GET"),
            host: Short::new("example.com"),
            path: Short::new("/x \"y\""),
            status: 200,
            bytes_in: 10,
            bytes_out: 20,
            queue_us: Some(0),
            connect_us: None,
            first_byte_us: Some(1_500),
            total_us: 2_250,
            retries: 1,
            term: *b"--",
            request_id: 0xabc,
            ..Record::default()
        }
    }

    #[test]
    fn a_text_line_has_every_field_in_order() {
        let mut s = String::new();
        text(&sample(), &mut Clock::default(), &mut s);
        assert_eq!(
            s,
            "1970-01-02T00:00:00.000Z 127.0.0.1:5000 web app/a 200 10 20 0.000/-1/1.500/2.250 1 -- 0000000000000abc \"GET example.com/x \\\"y\\\"\""
        );
    }

    #[test]
    fn a_json_line_parses_back() {
        let mut s = String::new();
        json(&sample(), &mut s);
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        assert_eq!(v["path"], "/x \"y\"");
        assert_eq!(v["connect_ms"], serde_json::Value::Null);
        assert_eq!(v["first_byte_ms"], 1.5);
        assert_eq!(v["request_id"], "0000000000000abc");
        assert_eq!(v["termination"], "--");
    }
}
