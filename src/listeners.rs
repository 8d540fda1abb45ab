//! The daemon's listening sockets and their accept loops, as a set that a
//! reload reconciles by (frontend, address): an unchanged listener keeps its
//! socket (no accept gap, nothing refused), a new one is bound before the new
//! configuration is swapped in (a bind error refuses the reload and changes
//! nothing) and starts accepting right after, a removed one stops accepting
//! and its connections finish.
//!
//! With `threading = "per-core"` each address has one `SO_REUSEPORT` socket
//! per worker thread, each accepted on its own thread's runtime; `shared` has
//! one socket per address on the one work-stealing runtime.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::runtime::Handle;
use tokio::sync::{Semaphore, mpsc, watch};

use crate::config::Config;
use crate::listener::{self, AcceptCtx};
use crate::net::ConnOpts;
use crate::runtime::Shared;

/// Why an address could not be listened on.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error("frontend \"{frontend}\": cannot listen on {addr}: {source}")]
    Bind {
        frontend: String,
        addr: SocketAddr,
        source: io::Error,
    },
    #[error(
        "frontend \"{frontend}\": address {addr} is already in use by another process (another fulcrum on the same config?)"
    )]
    InUse { frontend: String, addr: SocketAddr },
}

/// One configured address of a frontend, bound (one socket per worker in
/// per-core mode), not yet accepting.
#[derive(Debug)]
pub struct Bound {
    frontend: String,
    /// As configured (port 0 stays 0: that is what a reload compares).
    want: SocketAddr,
    /// As bound (port 0 resolved).
    addr: SocketAddr,
    sockets: Vec<std::net::TcpListener>,
}

/// A listener accepting now.
struct Active {
    frontend: String,
    want: SocketAddr,
    addr: SocketAddr,
    /// Set to stop this listener's accept loops (a reload removed it).
    stop: watch::Sender<bool>,
}

/// What every accept loop shares.
pub struct Base {
    pub shared: Arc<Shared>,
    pub global_limit: Option<Arc<Semaphore>>,
    pub stop_accepting: watch::Receiver<bool>,
    pub opts: Arc<ConnOpts>,
}

pub struct Listeners {
    per_core: bool,
    workers: Vec<Handle>,
    base: Base,
    /// Dropped by `close` at shutdown, so the drain waits only for connections.
    tracker: Mutex<Option<mpsc::Sender<()>>>,
    /// Each frontend's `maxconn` permits, by name (kept across reloads).
    limits: Mutex<HashMap<String, Option<Arc<Semaphore>>>>,
    active: Mutex<Vec<Active>>,
}

/// Bind every address of `cfg` (`sockets` per address). Addresses with a
/// fixed port are first checked with a plain bind, so another process on the
/// same port is an error, not a silent share through `SO_REUSEPORT`.
pub fn bind(
    cfg: &Config,
    per_core: bool,
    sockets: usize,
    skip: impl Fn(&str, SocketAddr) -> bool,
) -> Result<Vec<Bound>, BindError> {
    let wanted: Vec<(&str, SocketAddr, u32, bool)> = cfg
        .frontends
        .iter()
        .flat_map(|f| {
            f.listen
                .iter()
                .map(move |a| (f.name.as_str(), *a, f.backlog, f.defer_accept))
        })
        .filter(|(f, a, _, _)| !skip(f, *a))
        .collect();
    for &(frontend, addr, _, _) in wanted.iter().filter(|w| w.1.port() != 0) {
        match listener::probe(addr) {
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
                return Err(BindError::InUse {
                    frontend: frontend.into(),
                    addr,
                });
            }
            Err(source) => {
                return Err(BindError::Bind {
                    frontend: frontend.into(),
                    addr,
                    source,
                });
            }
            Ok(()) => {}
        }
    }
    let mut out = Vec::new();
    for (frontend, want, backlog, defer) in wanted {
        let mut addr = want;
        let mut socks = Vec::new();
        for _ in 0..sockets {
            let err = |source| BindError::Bind {
                frontend: frontend.into(),
                addr,
                source,
            };
            let l = listener::bind(addr, backlog, per_core, defer).map_err(err)?;
            addr = l.local_addr().map_err(err)?;
            socks.push(l);
        }
        out.push(Bound {
            frontend: frontend.into(),
            want,
            addr,
            sockets: socks,
        });
    }
    Ok(out)
}

impl Listeners {
    pub fn new(
        per_core: bool,
        workers: Vec<Handle>,
        base: Base,
        tracker: mpsc::Sender<()>,
        cfg: &Config,
    ) -> Listeners {
        let limits = cfg
            .frontends
            .iter()
            .map(|f| {
                let sem = f.maxconn.map(|n| Arc::new(Semaphore::new(n as usize)));
                (f.name.clone(), sem)
            })
            .collect();
        Listeners {
            per_core,
            workers,
            base,
            tracker: Mutex::new(Some(tracker)),
            limits: Mutex::new(limits),
            active: Mutex::default(),
        }
    }

    /// Start accepting on `bound`.
    pub fn start(&self, bound: Vec<Bound>) {
        let Some(tracker) = self
            .tracker
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
        else {
            return;
        };
        let mut active = self.active.lock().unwrap_or_else(|e| e.into_inner());
        for b in bound {
            let (stop, removed) = watch::channel(false);
            let limit = self
                .limits
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&b.frontend)
                .cloned()
                .flatten();
            for (i, sock) in b.sockets.into_iter().enumerate() {
                let ctx = AcceptCtx {
                    shared: self.base.shared.clone(),
                    frontend: b.frontend.as_str().into(),
                    global_limit: self.base.global_limit.clone(),
                    frontend_limit: limit.clone(),
                    stop_accepting: self.base.stop_accepting.clone(),
                    removed: removed.clone(),
                    tracker: tracker.clone(),
                    opts: self.base.opts.clone(),
                };
                let worker = if self.per_core { i } else { 0 };
                if let Some(h) = self.workers.get(worker) {
                    h.spawn(async move {
                        match tokio::net::TcpListener::from_std(sock) {
                            Ok(l) => listener::accept_loop(l, ctx).await,
                            Err(e) => tracing::error!(error = %e, "cannot register listener"),
                        }
                    });
                }
            }
            active.push(Active {
                frontend: b.frontend,
                want: b.want,
                addr: b.addr,
                stop,
            });
        }
    }

    /// Every frontend's bound addresses, in configuration order.
    pub fn listening(&self, cfg: &Config) -> Vec<(String, Vec<SocketAddr>)> {
        let active = self.active.lock().unwrap_or_else(|e| e.into_inner());
        cfg.frontends
            .iter()
            .map(|f| {
                let addrs = f
                    .listen
                    .iter()
                    .filter_map(|want| {
                        active
                            .iter()
                            .find(|a| a.frontend == f.name && a.want == *want)
                            .map(|a| a.addr)
                    })
                    .collect();
                (f.name.clone(), addrs)
            })
            .collect()
    }

    /// The daemon stops: no new accept loop, and this set's hold on the
    /// shutdown tracker is let go.
    pub fn close(&self) {
        self.tracker
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
    }

    /// For a reload to `new`: bind what it adds (nothing accepts yet).
    /// Returns the new listeners and what to stop, or why nothing changes.
    pub fn plan(&self, new: &Config) -> Result<Plan, String> {
        let active = self.active.lock().unwrap_or_else(|e| e.into_inner());
        let keep = |f: &str, a: SocketAddr| active.iter().any(|x| x.frontend == f && x.want == a);
        let sockets = if self.per_core { self.workers.len() } else { 1 };
        let added = bind(new, self.per_core, sockets, keep).map_err(|e| e.to_string())?;
        let removed = active
            .iter()
            .filter(|a| {
                !new.frontends
                    .iter()
                    .any(|f| f.name == a.frontend && f.listen.contains(&a.want))
            })
            .map(|a| (a.frontend.clone(), a.want))
            .collect();
        Ok(Plan { added, removed })
    }

    /// After the new configuration is in: start the added listeners, stop
    /// the removed ones; one line each.
    pub fn apply(&self, plan: Plan, new: &Config) -> Vec<String> {
        let mut notes = Vec::new();
        {
            let mut limits = self.limits.lock().unwrap_or_else(|e| e.into_inner());
            for f in &new.frontends {
                limits
                    .entry(f.name.clone())
                    .or_insert_with(|| f.maxconn.map(|n| Arc::new(Semaphore::new(n as usize))));
            }
        }
        for b in &plan.added {
            notes.push(format!("frontend {}: listening on {}", b.frontend, b.addr));
            tracing::info!(frontend = %b.frontend, addr = %b.addr, "listener added by reload");
        }
        self.start(plan.added);
        let mut active = self.active.lock().unwrap_or_else(|e| e.into_inner());
        active.retain(|a| {
            let gone = plan
                .removed
                .iter()
                .any(|(f, w)| *f == a.frontend && *w == a.want);
            if gone {
                let _ = a.stop.send(true);
                notes.push(format!(
                    "frontend {}: no longer listening on {} (its connections finish)",
                    a.frontend, a.addr
                ));
                tracing::info!(frontend = %a.frontend, addr = %a.addr, "listener removed by reload");
            }
            !gone
        });
        notes
    }
}

/// A reload's listener changes, bound and not yet applied.
pub struct Plan {
    added: Vec<Bound>,
    removed: Vec<(String, SocketAddr)>,
}
