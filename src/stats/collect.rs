//! The collector: once a second, on a thread of its own (never a traffic
//! thread), it reads every counter and latency bucket and keeps what a single
//! read cannot give — rates per second and their maxima, the last five
//! minutes per second (request rate, error rate, p99) for the dashboard's
//! charts, and the latency windows (last 10 s, last 5 min, since start).
//!
//! It works on plain snapshots (`Snapshot`) and the servers' `Recorder`s, so
//! it knows nothing of the runtime; the daemon's stats thread calls `tick`
//! and every reader calls `fill` on a fresh snapshot. Entries are keyed by
//! name (frontends, backends) and by live-state id (servers), so they follow
//! reloads the way the counters do; what is gone from the configuration is
//! forgotten at the next tick.
//!
//! Percentiles come from `hdrhistogram` (two significant digits, 1 µs to
//! 2^36 µs): the buckets of a window are recorded into one scratch histogram,
//! which is reset and reused, and read at the quantiles. They are computed
//! at most once per tick, when first asked for.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

use hdrhistogram::Histogram;

use super::latency::{BUCKETS, Phase, Recorder, value_of};
use super::{Latency, Percentiles, Rates, Snapshot, Window};

/// Seconds of history kept per frontend, backend and server.
pub const HISTORY: usize = 300;

/// Seconds since the process started, as of the collector's last tick (a
/// coarse clock for "last picked" that costs a traffic thread one load).
pub fn coarse_secs() -> u64 {
    COARSE.load(Relaxed)
}

static COARSE: AtomicU64 = AtomicU64::new(0);

fn process_start() -> Instant {
    static START: OnceLock<Instant> = OnceLock::new();
    *START.get_or_init(Instant::now)
}

/// One second of a frontend's, backend's or server's history.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Point {
    /// Requests (http) or connections (tcp) in that second.
    pub req: u32,
    /// Errors in that second (5xx, refused requests, failed connects).
    pub err: u32,
    /// The 99th percentile of the total time, in microseconds (0 when no request ended).
    pub p99_us: u32,
}

/// What the collector reads of one object at a tick: its running totals.
#[derive(Debug, Clone, Copy, Default)]
pub struct Totals {
    pub conns: u64,
    pub reqs: u64,
    pub errs: u64,
}

#[derive(Debug, Default)]
struct Track {
    last: Option<Totals>,
    rates: Rates,
    history: VecDeque<Point>,
    seen: u64,
}

impl Track {
    fn step(&mut self, now: Totals, p99_us: u32, tick: u64) {
        self.seen = tick;
        let Some(last) = self.last.replace(now) else {
            return;
        };
        let conn = now.conns.saturating_sub(last.conns);
        let req = now.reqs.saturating_sub(last.reqs);
        let err = now.errs.saturating_sub(last.errs);
        let r = &mut self.rates;
        r.conn_rate = conn;
        r.conn_rate_max = r.conn_rate_max.max(conn);
        r.req_rate = req;
        r.req_rate_max = r.req_rate_max.max(req);
        if self.history.len() == HISTORY {
            self.history.pop_front();
        }
        self.history.push_back(Point {
            req: u32::try_from(req).unwrap_or(u32::MAX),
            err: u32::try_from(err).unwrap_or(u32::MAX),
            p99_us,
        });
    }
}

/// One second's new latency values of one server: (phase, bucket, count).
type Delta = Vec<(u8, u16, u32)>;

/// A server's latency as the collector follows it.
struct LatTrack {
    /// The raw (wrapping) bucket counts at the last tick.
    prev: Box<[[u32; BUCKETS]; 4]>,
    /// Everything since start.
    total: Box<[[u64; BUCKETS]; 4]>,
    /// The last `HISTORY` seconds, newest last.
    ring: VecDeque<Delta>,
}

impl LatTrack {
    fn new() -> LatTrack {
        LatTrack {
            prev: Box::new([[0; BUCKETS]; 4]),
            total: Box::new([[0; BUCKETS]; 4]),
            ring: VecDeque::new(),
        }
    }

    /// Read the recorder; push this second's delta.
    fn step(&mut self, rec: &Recorder) {
        let mut delta = Vec::new();
        let mut now = [0u32; BUCKETS];
        for phase in Phase::ALL {
            let p = phase as usize;
            now.fill(0);
            rec.read(phase, &mut now);
            for (i, (&n, prev)) in now.iter().zip(self.prev[p].iter_mut()).enumerate() {
                let d = n.wrapping_sub(*prev);
                if d > 0 {
                    *prev = n;
                    self.total[p][i] += u64::from(d);
                    delta.push((p as u8, i as u16, d));
                }
            }
        }
        if self.ring.len() == HISTORY {
            self.ring.pop_front();
        }
        self.ring.push_back(delta);
    }

    /// Record phase `p` of the last `secs` seconds (all kept ones for `None`) into `h`.
    fn add_window(&self, p: usize, secs: Option<usize>, h: &mut Histogram<u64>) {
        match secs {
            None => {
                for (i, &n) in self.total[p].iter().enumerate().filter(|(_, n)| **n > 0) {
                    let _ = h.record_n(value_of(i), n);
                }
            }
            Some(s) => {
                for d in self.ring.iter().rev().take(s) {
                    for &(_, i, n) in d.iter().filter(|e| usize::from(e.0) == p) {
                        let _ = h.record_n(value_of(usize::from(i)), u64::from(n));
                    }
                }
            }
        }
    }
}

#[derive(Default)]
struct ServerTrack {
    track: Track,
    lat: Option<LatTrack>,
}

/// Percentiles computed for a tick, by server id and backend name.
#[derive(Default)]
struct Cached {
    tick: u64,
    servers: HashMap<u64, Latency>,
    backends: HashMap<String, Latency>,
}

#[derive(Default)]
struct State {
    tick: u64,
    frontends: HashMap<String, Track>,
    backends: HashMap<String, Track>,
    servers: HashMap<u64, ServerTrack>,
    cached: Option<Cached>,
    /// Reset and reused: one object's window, and a backend's merge.
    scratch: Option<Box<(Histogram<u64>, Histogram<u64>)>>,
}

/// Rates, history and latency windows; see the module doc.
#[derive(Default)]
pub struct Collector {
    state: Mutex<State>,
}

impl std::fmt::Debug for Collector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Collector")
    }
}

fn scratch(
    slot: &mut Option<Box<(Histogram<u64>, Histogram<u64>)>>,
) -> Option<&mut (Histogram<u64>, Histogram<u64>)> {
    if slot.is_none() {
        let h = Histogram::new_with_bounds(1, 1 << 36, 2).ok()?;
        *slot = Some(Box::new((h.clone(), h)));
    }
    slot.as_deref_mut()
}

fn percentiles(h: &Histogram<u64>) -> Percentiles {
    if h.is_empty() {
        return Percentiles::default();
    }
    let count = h.len();
    let mean = h.mean();
    Percentiles {
        count,
        p50: h.value_at_quantile(0.5),
        p90: h.value_at_quantile(0.9),
        p99: h.value_at_quantile(0.99),
        p999: h.value_at_quantile(0.999),
        max: h.max(),
        mean: mean as u64,
        sum: (mean * count as f64) as u64,
    }
}

/// The totals a tick reads of a snapshot's frontend, backend or server.
fn frontend_totals(f: &super::FrontendStats) -> Totals {
    Totals {
        conns: f.conn_total,
        reqs: f.http_requests,
        errs: f.http_responses[4] + f.request_errors(),
    }
}

fn backend_totals(b: &super::BackendStats) -> Totals {
    Totals {
        conns: b.conn_total,
        reqs: b.servers.iter().map(|s| s.picked).sum(),
        errs: b.http_responses[4] + b.no_server,
    }
}

fn server_totals(s: &super::ServerStats) -> Totals {
    Totals {
        conns: s.conn_total,
        reqs: s.picked,
        errs: s.http_responses[4] + s.connect_errors,
    }
}

impl Collector {
    /// Read everything once; `recorders` gives each server id's latency buckets.
    pub fn tick(&self, snap: &Snapshot, recorders: &HashMap<u64, &Recorder>) {
        COARSE.store(process_start().elapsed().as_secs(), Relaxed);
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        st.tick += 1;
        let tick = st.tick;
        let State {
            frontends,
            backends,
            servers,
            scratch: slot,
            ..
        } = &mut *st;
        for f in &snap.frontends {
            let t = frontends.entry(f.name.clone()).or_default();
            t.step(frontend_totals(f), 0, tick);
        }
        let Some((one, merged)) = scratch(slot) else {
            return;
        };
        for b in &snap.backends {
            merged.reset();
            for s in &b.servers {
                let e = servers.entry(s.id).or_default();
                let mut p99 = 0;
                if let Some(rec) = recorders.get(&s.id).filter(|r| r.used()) {
                    let lat = e.lat.get_or_insert_with(LatTrack::new);
                    lat.step(rec);
                    one.reset();
                    lat.add_window(Phase::Total as usize, Some(1), one);
                    let _ = merged.add(&*one);
                    p99 = percentiles(one).p99;
                }
                e.track.step(server_totals(s), clamp(p99), tick);
            }
            let p99 = percentiles(merged).p99;
            let t = backends.entry(b.name.clone()).or_default();
            t.step(backend_totals(b), clamp(p99), tick);
        }
        frontends.retain(|_, t| t.seen == tick);
        backends.retain(|_, t| t.seen == tick);
        servers.retain(|_, t| t.track.seen == tick);
    }

    /// Add rates and (when asked) latency percentiles to a fresh snapshot.
    pub fn fill(&self, snap: &mut Snapshot, latency: bool) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        for f in &mut snap.frontends {
            if let Some(t) = st.frontends.get(&f.name) {
                f.rates = t.rates;
            }
        }
        for b in &mut snap.backends {
            if let Some(t) = st.backends.get(&b.name) {
                b.rates = t.rates;
            }
            for s in &mut b.servers {
                if let Some(t) = st.servers.get(&s.id) {
                    s.rates = t.track.rates;
                }
            }
        }
        if !latency {
            return;
        }
        let tick = st.tick;
        if st.cached.as_ref().is_none_or(|c| c.tick != tick) {
            let cached = compute(&mut st, snap);
            st.cached = Some(cached);
        }
        let Some(cached) = &st.cached else { return };
        for b in &mut snap.backends {
            b.latency = cached.backends.get(&b.name).cloned().map(Box::new);
            for s in &mut b.servers {
                s.latency = cached.servers.get(&s.id).cloned().map(Box::new);
            }
        }
    }

    /// Ticks so far (each adds one point to every history).
    pub fn ticks(&self) -> u64 {
        self.state.lock().map_or(0, |s| s.tick)
    }

    /// The last `secs` seconds of history of a frontend, backend or server
    /// (`server` = its live-state id), oldest first.
    pub fn history(&self, of: Of<'_>, secs: usize) -> Vec<Point> {
        let st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let track = match of {
            Of::Frontend(n) => st.frontends.get(n),
            Of::Backend(n) => st.backends.get(n),
            Of::Server(id) => st.servers.get(&id).map(|s| &s.track),
        };
        track.map_or_else(Vec::new, |t| {
            let skip = t.history.len().saturating_sub(secs);
            t.history.iter().skip(skip).copied().collect()
        })
    }
}

/// Whose history.
#[derive(Debug, Clone, Copy)]
pub enum Of<'a> {
    Frontend(&'a str),
    Backend(&'a str),
    Server(u64),
}

fn clamp(us: u64) -> u32 {
    u32::try_from(us).unwrap_or(u32::MAX)
}

/// Percentiles of every server and backend, every window and phase.
fn compute(st: &mut State, snap: &Snapshot) -> Cached {
    let State {
        servers,
        scratch: slot,
        tick,
        ..
    } = st;
    let mut out = Cached {
        tick: *tick,
        ..Cached::default()
    };
    let Some((one, merged)) = scratch(slot) else {
        return out;
    };
    for b in &snap.backends {
        let lats: Vec<(u64, &LatTrack)> = b
            .servers
            .iter()
            .filter_map(|s| Some((s.id, servers.get(&s.id)?.lat.as_ref()?)))
            .collect();
        if lats.is_empty() {
            continue;
        }
        let mut all = Latency::default();
        for w in Window::ALL {
            for p in Phase::ALL {
                merged.reset();
                for (id, lat) in &lats {
                    one.reset();
                    lat.add_window(p as usize, w.seconds(), one);
                    let _ = merged.add(&*one);
                    out.servers.entry(*id).or_default().by[w as usize][p as usize] =
                        percentiles(one);
                }
                all.by[w as usize][p as usize] = percentiles(merged);
            }
        }
        out.backends.insert(b.name.clone(), all);
    }
    out
}
