//! The in-process entry point: `start(config)` binds every listener, starts the
//! worker threads and returns the bound addresses (so tests can use port 0);
//! `Running::shutdown()` stops accepting, lets open connections finish within the
//! grace period, then closes what is left.
//!
//! Threading (see README, "Threading model"): `per-core` runs one single-threaded
//! tokio runtime per thread, each with its own SO_REUSEPORT socket per address, as
//! HAProxy and nginx do; `shared` runs one work-stealing runtime over one socket.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc, watch};

use crate::config::{Config, Threading};
use crate::fdlimit;
use crate::listener::{self, AcceptCtx};
use crate::runtime::Shared;
use crate::stats::Snapshot;
use crate::stats::access::AccessLog;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
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
    #[error("cannot start worker thread: {0}")]
    Thread(io::Error),
    #[error("{0}")]
    Icmp(String),
    #[error("access log: cannot open {path}: {source}")]
    AccessLog { path: String, source: io::Error },
    #[error("[stats] listen: cannot listen on {addr}: {source}")]
    Stats { addr: SocketAddr, source: io::Error },
    #[error("{0}")]
    Admin(#[from] crate::admin::AdminError),
}

/// A running daemon.
pub struct Running {
    listening: Vec<(String, Vec<SocketAddr>)>,
    shared: Arc<Shared>,
    stop_accepting: watch::Sender<bool>,
    force_stop: watch::Sender<bool>,
    exit: watch::Sender<bool>,
    drained: mpsc::Receiver<()>,
    threads: Vec<std::thread::JoinHandle<()>>,
    grace: Duration,
    budget: fdlimit::Budget,
    /// Dropped (stopped) when the daemon stops.
    health: Option<crate::health::Health>,
    /// The collector's thread, the stats page and the access log's writer.
    ticker: Option<Ticker>,
    web: Option<crate::stats::web::Web>,
    access_log: Option<(Arc<AccessLog>, std::thread::JoinHandle<()>)>,
    admin: Option<crate::admin::AdminSocket>,
    ctl: Arc<crate::admin::Ctl>,
}

/// The collector's thread: `Shared::tick` every second until dropped.
struct Ticker {
    stop: Arc<std::sync::atomic::AtomicBool>,
    handle: std::thread::JoinHandle<()>,
}

impl Ticker {
    fn start(shared: Arc<Shared>) -> io::Result<Ticker> {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::Builder::new()
            .name("fulcrum-stats".into())
            .spawn(move || {
                let start = std::time::Instant::now();
                let mut next = 1u64;
                while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                    let due = start + Duration::from_secs(next);
                    let now = std::time::Instant::now();
                    if now < due {
                        std::thread::park_timeout(due - now);
                        continue;
                    }
                    shared.tick();
                    // After a stall, skip to the next whole second.
                    next = start.elapsed().as_secs() + 1;
                }
            })?;
        Ok(Ticker { stop, handle })
    }

    fn stop(self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.handle.thread().unpark();
        let _ = self.handle.join();
    }
}

/// What a shutdown did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stopped {
    /// Every connection finished within the grace period.
    pub drained: bool,
}

/// Bind and start serving `config`. Raises the file-descriptor limit first and
/// sizes `maxconn` and the idle pools from it (`fdlimit.rs`).
pub fn start(mut config: Config) -> Result<Running, StartError> {
    let (soft_before, soft, hard) = fdlimit::raise();
    let budget = fdlimit::plan(&config, soft_before, soft, hard);
    tracing::info!(
        "file descriptors: soft limit {soft} (was {soft_before}), hard limit {}; maxconn {} ({})",
        hard.map_or_else(|| "unlimited".to_string(), |h| h.to_string()),
        budget.maxconn,
        if budget.derived {
            "derived from the limit"
        } else {
            "from the config"
        }
    );
    if let Some(w) = fdlimit::maxconn_warning(&config, hard) {
        tracing::warn!("{w}");
    }
    // Runtime changes kept from an earlier run (admin socket), on top of the file.
    let overrides = load_overrides(&mut config);
    let config = Arc::new(config);
    let threads = config.global.threads.max(1);
    let per_core = config.global.threading == Threading::PerCore && threads > 1;
    let sockets_per_addr = if per_core { threads } else { 1 };

    // Bind everything up front, in the caller's thread: errors surface here, and
    // port 0 is resolved once and then shared by the per-thread sockets.
    let mut listening = Vec::new();
    // bound[t] = the sockets thread t accepts on: (frontend index, listener).
    let mut bound: Vec<Vec<(usize, std::net::TcpListener)>> =
        (0..sockets_per_addr).map(|_| Vec::new()).collect();
    // One instance per address: refuse to share a port with a running process.
    for f in &config.frontends {
        for &addr in f.listen.iter().filter(|a| a.port() != 0) {
            match listener::probe(addr) {
                Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
                    return Err(StartError::InUse {
                        frontend: f.name.clone(),
                        addr,
                    });
                }
                Err(source) => {
                    return Err(StartError::Bind {
                        frontend: f.name.clone(),
                        addr,
                        source,
                    });
                }
                Ok(()) => {}
            }
        }
    }
    for (fi, f) in config.frontends.iter().enumerate() {
        let mut addrs = Vec::new();
        for &want in &f.listen {
            let mut addr = want;
            for slot in bound.iter_mut() {
                let l = listener::bind(addr, f.backlog, per_core).map_err(|source| {
                    StartError::Bind {
                        frontend: f.name.clone(),
                        addr,
                        source,
                    }
                })?;
                addr = l.local_addr().map_err(|source| StartError::Bind {
                    frontend: f.name.clone(),
                    addr,
                    source,
                })?;
                slot.push((fi, l));
            }
            addrs.push(addr);
        }
        listening.push((f.name.clone(), addrs));
    }

    let icmp = config.backends.iter().flat_map(|b| &b.servers).any(|s| {
        matches!(
            s.health.as_ref().map(|h| &h.kind),
            Some(crate::config::health::CheckKind::Icmp)
        )
    });
    if icmp {
        crate::health::icmp::available().map_err(StartError::Icmp)?;
    }
    let shared = Arc::new(Shared::new(config.clone()));
    let _ = shared.facts.set(crate::runtime::Facts {
        fd_limit: soft,
        maxconn: u64::from(budget.maxconn),
        threads: threads as u64,
        histograms: config.stats.histograms,
    });
    let web = match config.stats.listen {
        Some(addr) => Some(
            crate::stats::web::Web::start(addr, &config.stats, shared.clone())
                .map_err(|source| StartError::Stats { addr, source })?,
        ),
        None => None,
    };
    let access_log = match &config.log.access {
        Some(target) => {
            let (log, handle) = AccessLog::start(
                target.clone(),
                config.log.format,
                config.log.query,
                shared.global.clone(),
            )
            .map_err(|source| StartError::AccessLog {
                path: match target {
                    crate::stats::access::Target::Stdout => "stdout".into(),
                    crate::stats::access::Target::File(p) => p.display().to_string(),
                },
                source,
            })?;
            Some((Arc::new(log), handle))
        }
        None => None,
    };
    let ticker = Ticker::start(shared.clone()).map_err(StartError::Thread)?;
    let ctl = Arc::new(crate::admin::Ctl {
        shared: shared.clone(),
        config_file: Some(std::path::PathBuf::from(&config.file)),
        state_file: config
            .admin
            .socket
            .as_ref()
            .and(config.admin.state_file.clone()),
        overrides: std::sync::Mutex::new(overrides),
    });
    ctl.apply_states();
    let admin = match config.admin.socket {
        Some(_) => Some(crate::admin::AdminSocket::start(
            &config.admin,
            ctl.clone(),
        )?),
        None => None,
    };
    let health = crate::health::Health::start(shared.clone()).map_err(StartError::Thread)?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let (force_tx, force_rx) = watch::channel(false);
    let (exit_tx, exit_rx) = watch::channel(false);
    let (tracker, drained) = mpsc::channel::<()>(1);
    let global_limit = Some(Arc::new(Semaphore::new(budget.maxconn as usize)));
    let pool_cap = budget.pool_per_thread;
    let frontend_limits: Vec<Option<Arc<Semaphore>>> = config
        .frontends
        .iter()
        .map(|f| f.maxconn.map(|n| Arc::new(Semaphore::new(n as usize))))
        .collect();
    let opts = Arc::new(crate::net::ConnOpts {
        splice: config.global.splice,
        histograms: config.stats.histograms,
        access_log: access_log.as_ref().map(|(l, _)| l.clone()),
        park_after: config.global.idle_park_after,
    });

    let make_ctx = |fi: usize| AcceptCtx {
        shared: shared.clone(),
        frontend: config.frontends[fi].name.as_str().into(),
        global_limit: global_limit.clone(),
        frontend_limit: frontend_limits[fi].clone(),
        stop_accepting: stop_rx.clone(),
        force_stop: force_rx.clone(),
        tracker: tracker.clone(),
        opts: opts.clone(),
    };

    let mut handles = Vec::new();
    for (t, sockets) in bound.into_iter().enumerate() {
        let jobs: Vec<(std::net::TcpListener, AcceptCtx)> = sockets
            .into_iter()
            .map(|(fi, l)| (l, make_ctx(fi)))
            .collect();
        let mut exit = exit_rx.clone();
        let workers = if per_core { 1 } else { threads };
        let h = std::thread::Builder::new()
            .name(format!("fulcrum-{t}"))
            .spawn(move || {
                crate::l7::pool::set_thread_cap(pool_cap);
                let rt = if workers == 1 {
                    tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                } else {
                    tokio::runtime::Builder::new_multi_thread()
                        .worker_threads(workers)
                        .thread_name("fulcrum-worker")
                        .on_thread_start(move || crate::l7::pool::set_thread_cap(pool_cap))
                        .enable_all()
                        .build()
                };
                let rt = match rt {
                    Ok(rt) => rt,
                    Err(e) => {
                        tracing::error!(error = %e, "cannot build the runtime");
                        return;
                    }
                };
                rt.block_on(async move {
                    for (l, ctx) in jobs {
                        match tokio::net::TcpListener::from_std(l) {
                            Ok(l) => {
                                tokio::spawn(listener::accept_loop(l, ctx));
                            }
                            Err(e) => tracing::error!(error = %e, "cannot register listener"),
                        }
                    }
                    let _ = exit.wait_for(|e| *e).await;
                });
            })
            .map_err(StartError::Thread)?;
        handles.push(h);
    }
    Ok(Running {
        listening,
        shared,
        stop_accepting: stop_tx,
        force_stop: force_tx,
        exit: exit_tx,
        drained,
        threads: handles,
        grace: config.global.grace,
        budget,
        health: Some(health),
        ticker: Some(ticker),
        web,
        access_log,
        admin,
        ctl,
    })
}

/// The state file's runtime changes applied to `config` (only with an admin
/// socket: it is what makes them). A bad file is reported and ignored.
fn load_overrides(config: &mut Config) -> crate::admin::state::Overrides {
    let path = match (&config.admin.socket, &config.admin.state_file) {
        (Some(_), Some(p)) => p.clone(),
        _ => return Default::default(),
    };
    let mut ov = match crate::admin::state::Overrides::load(&path) {
        Ok(ov) => ov,
        Err(e) => {
            tracing::warn!("{e}");
            return Default::default();
        }
    };
    for note in ov.apply(config) {
        tracing::info!("state file: {note}");
    }
    if !ov.servers.is_empty() {
        tracing::info!(
            changes = ov.servers.len(),
            file = %path.display(),
            "runtime changes from the state file applied on top of the config"
        );
    }
    ov
}

impl Running {
    /// The addresses frontend `name` listens on (port 0 resolved).
    pub fn addrs(&self, name: &str) -> &[SocketAddr] {
        self.listening
            .iter()
            .find(|(n, _)| n == name)
            .map_or(&[], |(_, a)| a.as_slice())
    }

    /// The first address of frontend `name`.
    pub fn addr(&self, name: &str) -> Option<SocketAddr> {
        self.addrs(name).first().copied()
    }

    pub fn listening(&self) -> &[(String, Vec<SocketAddr>)] {
        &self.listening
    }

    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// The file-descriptor limits and what was sized from them.
    pub fn fd_budget(&self) -> fdlimit::Budget {
        self.budget
    }

    /// Run a command (`command.rs`): what the admin socket and the tests use.
    pub fn command(
        &self,
        cmd: crate::command::Command,
    ) -> Result<crate::command::Reply, crate::command::CommandError> {
        crate::command::execute(&self.shared, cmd)
    }

    /// Current counters, rates and percentiles.
    pub fn stats(&self) -> Snapshot {
        self.shared.stats()
    }

    /// Read the config file again and apply it (SIGHUP, the admin `reload`).
    pub fn reload(&self) -> Result<String, String> {
        self.ctl.reload()
    }

    /// The admin socket's paths, when it is on.
    pub fn admin_paths(&self) -> &[std::path::PathBuf] {
        self.admin.as_ref().map_or(&[], |a| a.paths())
    }

    /// Where the stats page listens (port 0 resolved), when it is on.
    pub fn stats_addr(&self) -> Option<SocketAddr> {
        self.web.as_ref().map(crate::stats::web::Web::addr)
    }

    /// Reopen the access log's file (SIGUSR1, after logrotate).
    pub fn reopen_logs(&self) {
        if let Some((log, _)) = &self.access_log {
            log.reopen();
        }
    }

    /// The access log, for whoever handles SIGUSR1 after `shutdown` took this.
    pub fn access_log(&self) -> Option<Arc<AccessLog>> {
        self.access_log.as_ref().map(|(l, _)| l.clone())
    }

    /// Stop accepting, wait up to the grace period for open connections, close the
    /// rest, and stop every thread.
    pub async fn shutdown(self) -> Stopped {
        self.shutdown_or(std::future::pending()).await
    }

    /// Like `shutdown`, but `cut` ends the grace period early (a second stop
    /// signal): the remaining connections are closed at once.
    pub async fn shutdown_or(mut self, cut: impl std::future::Future<Output = ()>) -> Stopped {
        let _ = self.stop_accepting.send(true);
        let drained = tokio::select! {
            r = tokio::time::timeout(self.grace, self.drained.recv()) => r.is_ok(),
            () = cut => {
                tracing::info!(
                    open = self.open_connections(),
                    "second stop signal: closing the remaining connections now"
                );
                false
            }
        };
        if !drained {
            tracing::info!(
                open = self.open_connections(),
                "closing the remaining connections"
            );
            let _ = self.force_stop.send(true);
            let _ = tokio::time::timeout(Duration::from_secs(5), self.drained.recv()).await;
        }
        self.finish();
        Stopped { drained }
    }

    /// Client connections open now, over every frontend.
    pub fn open_connections(&self) -> u64 {
        self.shared
            .snapshot()
            .frontends
            .iter()
            .map(|f| f.counters.conn_cur.get())
            .sum()
    }

    fn finish(&mut self) {
        drop(self.health.take());
        drop(self.web.take());
        drop(self.admin.take());
        if let Some(t) = self.ticker.take() {
            t.stop();
        }
        let _ = self.stop_accepting.send(true);
        let _ = self.force_stop.send(true);
        let _ = self.exit.send(true);
        for h in self.threads.drain(..) {
            let _ = h.join();
        }
        // The traffic threads are gone (and their senders with them): the
        // writer drains what is left and ends.
        if let Some((log, handle)) = self.access_log.take() {
            log.close();
            let _ = handle.join();
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.finish();
    }
}
