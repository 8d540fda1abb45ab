//! Health: active checks of every server that has one (tcp, http, script,
//! icmp), with rise/fall, slow start, the end of passive ejections, and
//! failing open — all on a thread of its own, never on the traffic threads,
//! so a slow script or a hung server never delays a request.
//!
//! One task per checked server runs its checks one after the other (they never
//! overlap), `interval` apart (`fastinter` while rise or fall is under way,
//! `downinter` while down), each with up to 10 % of jitter so checks never run
//! in lock-step; at most `MAX_CONCURRENT` checks run at once. A supervisor
//! task reconciles the checkers with each new snapshot (by the server's live
//! state: an unchanged server keeps its checker and its state), and every
//! `TICK` ends due ejections, ramps slow-starting servers, and starts or stops
//! failing open.
//!
//! A check writes the server's health, never its administrative state: a
//! server in maintenance stays there whatever its checks say.

pub mod icmp;
pub mod machine;
pub mod probe;
pub mod script;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinHandle;

use crate::config::health::{HealthCheck, OnAllDown};
use crate::runtime::{BackendRt, Runtime, Shared};
use crate::server::conditions::RAMP_FULL;
use crate::server::{Admin, ServerState, clock_ms};
use machine::{Machine, Verdict};
use probe::Target;

/// Checks running at once, over every server.
pub const MAX_CONCURRENT: usize = 256;
/// How often ejections, slow starts and fail-open are looked at.
pub const TICK: Duration = Duration::from_millis(100);

/// The health thread of a running daemon.
pub struct Health {
    stop: watch::Sender<bool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Health {
    /// Start checking the servers of `shared`'s snapshots.
    pub fn start(shared: Arc<Shared>) -> std::io::Result<Health> {
        let (stop, stop_rx) = watch::channel(false);
        let thread = std::thread::Builder::new()
            .name("fulcrum-health".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build();
                match rt {
                    Ok(rt) => rt.block_on(supervise(shared, stop_rx)),
                    Err(e) => tracing::error!(error = %e, "health checks cannot start"),
                }
            })?;
        Ok(Health {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Health {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A server identified by its live state (kept across snapshots).
type Key = usize;

fn key(state: &Arc<ServerState>) -> Key {
    Arc::as_ptr(state) as usize
}

struct Checker {
    check: HealthCheck,
    target: SocketAddr,
    /// The TLS settings it checks with (a reload builds new ones: the
    /// checker restarts with them, CA files read again).
    tls: Option<Arc<crate::tls::UpstreamTls>>,
    task: JoinHandle<()>,
}

/// A server coming back up with `slowstart` set.
struct Ramp {
    state: Arc<ServerState>,
    since: Instant,
    over: Duration,
    backend: Arc<str>,
}

/// A checker's news for the supervisor.
enum Event {
    Up(Arc<ServerState>, Arc<str>),
}

async fn supervise(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let mut generations = shared.subscribe();
    let sem = Arc::new(Semaphore::new(MAX_CONCURRENT));
    let (events_tx, mut events) = mpsc::unbounded_channel::<Event>();
    let mut checkers: HashMap<Key, Checker> = HashMap::new();
    let mut ramps: HashMap<Key, Ramp> = HashMap::new();
    let ctx = Ctx {
        sem,
        events: events_tx,
        shared: shared.clone(),
    };
    reconcile(&shared.snapshot(), &mut checkers, &ctx);
    let mut tick = tokio::time::interval(TICK);
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            r = generations.changed() => {
                if r.is_err() {
                    break;
                }
                reconcile(&shared.snapshot(), &mut checkers, &ctx);
            }
            Some(Event::Up(state, backend)) = events.recv() => {
                if start_ramp(&shared.snapshot(), state, backend, &mut ramps) {
                    shared.rebuild();
                }
            }
            _ = tick.tick() => {
                let rt = shared.snapshot();
                let now = clock_ms();
                for b in &rt.backends {
                    crate::eject::expire(b, now);
                    fail_open(b);
                }
                if step_ramps(&rt, &mut ramps) {
                    // A table-built balancer (wrr) sees new weights only in a
                    // new snapshot.
                    shared.rebuild();
                }
            }
        }
    }
    for (_, c) in checkers.drain() {
        c.task.abort();
    }
}

/// Start, keep or stop each server's checker to match `rt`.
/// What every checker shares.
#[derive(Clone)]
struct Ctx {
    sem: Arc<Semaphore>,
    events: mpsc::UnboundedSender<Event>,
    shared: Arc<Shared>,
}

fn reconcile(rt: &Runtime, checkers: &mut HashMap<Key, Checker>, ctx: &Ctx) {
    let mut seen = Vec::new();
    for (b, bc) in rt.backends.iter().zip(&rt.config.backends) {
        for s in b.all_servers() {
            let Some(check) = bc
                .servers
                .iter()
                .find(|c| *c.name == *s.name)
                .and_then(|c| c.health.clone())
            else {
                continue;
            };
            let k = key(&s.state);
            seen.push(k);
            let target = SocketAddr::new(
                check.address.unwrap_or(s.addr.ip()),
                check.port.unwrap_or(s.addr.port()),
            );
            let same_tls = |c: &Checker| match (&c.tls, &s.tls) {
                (None, None) => true,
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                _ => false,
            };
            if checkers
                .get(&k)
                .is_some_and(|c| c.check == check && c.target == target && same_tls(c))
            {
                continue;
            }
            if let Some(old) = checkers.remove(&k) {
                old.task.abort();
            }
            let fresh = s.state.cond.report.lock().map_or(true, |r| r.at_ms == 0);
            let t = Target {
                addr: target,
                backend: b.name.clone(),
                server: s.name.clone(),
                tls: s.tls.clone(),
            };
            let task = tokio::spawn(check_loop(
                check.clone(),
                t,
                s.state.clone(),
                ctx.clone(),
                fresh,
            ));
            checkers.insert(
                k,
                Checker {
                    check,
                    target,
                    tls: s.tls.clone(),
                    task,
                },
            );
        }
    }
    checkers.retain(|k, c| {
        let keep = seen.contains(k);
        if !keep {
            c.task.abort();
        }
        keep
    });
}

/// One server's checks, one after the other, for as long as it has them.
async fn check_loop(check: HealthCheck, t: Target, state: Arc<ServerState>, ctx: Ctx, fresh: bool) {
    let mut m = if fresh {
        Machine::fresh()
    } else {
        Machine::from(state.cond.health_up())
    };
    // A new server is checked at once (within a tenth of the interval).
    let draw = || crate::net::rand::fastrand_u64();
    let mut wait = probe::jittered(
        if fresh {
            check.interval / 10
        } else {
            check.interval
        },
        draw(),
    );
    loop {
        tokio::time::sleep(wait).await;
        let Ok(permit) = ctx.sem.acquire().await else {
            return;
        };
        let t0 = Instant::now();
        let result = probe::probe(&check, &t).await;
        drop(permit);
        let took = t0.elapsed();
        state.counters.checks.inc();
        if result.is_err() {
            state.counters.checks_failed.inc();
        }
        if let Ok(p) = &result
            && let Some(w) = p.weight
        {
            state.set_target_weight(w.min(crate::config::defaults::MAX_WEIGHT));
        }
        // Slow start is for a server coming back, not for one seen the first
        // time (HAProxy's rule too).
        let returning = !m.is_fresh();
        let verdict = m.record(result.is_ok(), check.rise, check.fall);
        report(&state, &result, took, m.streak(), verdict);
        match verdict {
            Verdict::WentDown => {
                state.set_health(false);
                state.counters.went_down.inc();
                let why = result.as_ref().err().map_or("", String::as_str);
                tracing::info!(backend = %t.backend, server = %t.server, check = check.kind.name(), "server DOWN: {why}");
            }
            Verdict::WentUp => {
                // Slow start begins before the server is up: its first share
                // is already the small one.
                let rt = ctx.shared.snapshot();
                if let Some(b) = rt
                    .backend(&t.backend)
                    .filter(|b| b.slowstart.is_some() && returning)
                {
                    state.set_ramp(0);
                    if b.weights_are_static() {
                        ctx.shared.rebuild();
                    }
                }
                state.set_health(true);
                let msg = result.as_ref().map_or("", |p| p.message.as_str());
                tracing::info!(backend = %t.backend, server = %t.server, check = check.kind.name(), "server UP: {msg}");
                if returning {
                    let _ = ctx.events.send(Event::Up(state.clone(), t.backend.clone()));
                }
            }
            Verdict::Stay => {}
        }
        let base = if m.streak() > 0 {
            check.fastinter
        } else if m.up() {
            check.interval
        } else {
            check.downinter
        };
        wait = probe::jittered(base, draw());
    }
}

/// Record the last check for the stats.
fn report(
    state: &ServerState,
    result: &Result<probe::Passed, String>,
    took: Duration,
    progress: u32,
    verdict: Verdict,
) {
    let Ok(mut r) = state.cond.report.lock() else {
        return;
    };
    let now = clock_ms();
    r.result = match result {
        Ok(p) => p.message.clone(),
        Err(e) => e.clone(),
    };
    r.duration_us = took.as_micros() as u64;
    r.at_ms = now.max(1);
    r.progress = progress;
    match verdict {
        Verdict::WentUp => {
            r.down_ms += now.saturating_sub(r.changed_at_ms);
            r.changed_at_ms = now;
        }
        Verdict::WentDown => r.changed_at_ms = now,
        Verdict::Stay => {}
    }
}

/// A server came up: with `slowstart`, its weight ramps from almost nothing.
/// True when its backend needs a new snapshot to see that.
fn start_ramp(
    rt: &Runtime,
    state: Arc<ServerState>,
    backend: Arc<str>,
    ramps: &mut HashMap<Key, Ramp>,
) -> bool {
    let Some(b) = rt.backend(&backend) else {
        return false;
    };
    let Some(over) = b.slowstart else {
        return false;
    };
    let rebuild = b.weights_are_static();
    state.set_ramp(0);
    ramps.insert(
        key(&state),
        Ramp {
            state,
            since: Instant::now(),
            over,
            backend,
        },
    );
    rebuild
}

/// Move every ramp on; true when a backend with a table-built balancer saw a
/// weight change (it needs a new snapshot).
fn step_ramps(rt: &Runtime, ramps: &mut HashMap<Key, Ramp>) -> bool {
    let mut rebuild = false;
    ramps.retain(|_, r| {
        let done = r.since.elapsed() >= r.over;
        let per_mille = if done {
            RAMP_FULL
        } else {
            (r.since.elapsed().as_millis() * u128::from(RAMP_FULL) / r.over.as_millis().max(1))
                as u32
        };
        let before = r.state.effective_weight();
        r.state.set_ramp(per_mille);
        if before != r.state.effective_weight()
            && rt
                .backend(&r.backend)
                .is_some_and(BackendRt::weights_are_static)
        {
            rebuild = true;
        }
        !done
    });
    rebuild
}

/// `on_all_down = "fail_open"`: when every server (not in maintenance) is
/// down, send traffic to all of them anyway; stop once one is up again.
fn fail_open(b: &BackendRt) {
    if b.on_all_down != OnAllDown::FailOpen {
        return;
    }
    let candidates = || {
        b.all_servers()
            .filter(|s| s.state.cond.admin() != Admin::Maint)
    };
    if candidates().next().is_none() {
        return;
    }
    let all_down = candidates().all(|s| !s.state.cond.health_up() || s.state.cond.ejected());
    let open = b.all_servers().any(|s| s.state.cond.fail_open());
    if all_down && !open {
        for s in b.all_servers() {
            s.state.set_fail_open(true);
        }
        b.counters.fail_opens.inc();
        tracing::warn!(backend = %b.name, "every server is down: FAILING OPEN, traffic goes to all of them (on_all_down = \"fail_open\")");
    } else if !all_down && open {
        for s in b.all_servers() {
            s.state.set_fail_open(false);
        }
        tracing::warn!(backend = %b.name, "a server is up again: no longer failing open");
    }
}
