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
use crate::runtime::Shared;
use crate::stats::Snapshot;
use crate::stats::access::AccessLog;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Listen(#[from] crate::listeners::BindError),
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
    listeners: Arc<crate::listeners::Listeners>,
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
    web: Option<crate::web::Web>,
    access_log: Option<Writer>,
    admin: Option<crate::admin::AdminSocket>,
    ctl: Arc<crate::admin::Ctl>,
}

/// The access log and its writer thread.
type Writer = (Arc<AccessLog>, std::thread::JoinHandle<()>);

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
    let (budget, soft) = fd_budget(&config);
    // Runtime changes kept from an earlier run (admin socket), on top of the file.
    let overrides = load_overrides(&mut config);
    let config = Arc::new(config);
    let threads = config.global.threads.max(1);
    let per_core = config.global.threading == Threading::PerCore && threads > 1;
    let sockets_per_addr = if per_core { threads } else { 1 };

    // Bind everything up front, in the caller's thread: errors surface here, and
    // port 0 is resolved once and then shared by the per-thread sockets.
    let bound = crate::listeners::bind(&config, per_core, sockets_per_addr, |_, _| false)?;

    icmp_if_needed(&config)?;
    let shared = Arc::new(Shared::new(config.clone()));
    let _ = shared.facts.set(crate::runtime::Facts {
        fd_limit: soft,
        maxconn: u64::from(budget.maxconn),
        threads: threads as u64,
        histograms: config.stats.histograms,
    });
    let web = match config.stats.listen {
        Some(addr) => Some(
            crate::web::Web::start(addr, &config.stats, shared.clone())
                .map_err(|source| StartError::Stats { addr, source })?,
        ),
        None => None,
    };
    let access_log = start_access_log(&config, &shared)?;
    let ticker = Ticker::start(shared.clone()).map_err(StartError::Thread)?;
    let (ctl, admin) = control(&config, &shared, overrides)?;
    let health = crate::health::Health::start(shared.clone()).map_err(StartError::Thread)?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let (force_tx, force_rx) = watch::channel(false);
    let (exit_tx, exit_rx) = watch::channel(false);
    let (tracker, drained) = mpsc::channel::<()>(1);
    let global_limit = Some(Arc::new(Semaphore::new(budget.maxconn as usize)));
    let pool_cap = budget.pool_per_thread;
    let opts = Arc::new(crate::net::ConnOpts {
        splice: config.global.splice,
        histograms: config.stats.histograms,
        access_log: access_log.as_ref().map(|(l, _)| l.clone()),
        park_after: config.global.idle_park_after,
        force_stop: force_rx,
        soft_stop: stop_rx.clone(),
    });

    let workers = Workers::start(sockets_per_addr, per_core, threads, pool_cap, &exit_rx)?;
    let listeners = Arc::new(crate::listeners::Listeners::new(
        per_core,
        workers.runtimes,
        crate::listeners::Base {
            shared: shared.clone(),
            global_limit,
            stop_accepting: stop_rx.clone(),
            opts,
        },
        tracker,
        &config,
    ));
    listeners.start(bound);
    let _ = ctl.listeners.set(listeners.clone());
    Ok(Running {
        listeners,
        shared,
        stop_accepting: stop_tx,
        force_stop: force_tx,
        exit: exit_tx,
        drained,
        threads: workers.threads,
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

/// The control plane: the runtime changes kept from an earlier run applied,
/// and the admin socket, when configured.
fn control(
    config: &Config,
    shared: &Arc<Shared>,
    overrides: crate::admin::state::Overrides,
) -> Result<(Arc<crate::admin::Ctl>, Option<crate::admin::AdminSocket>), StartError> {
    let ctl = Arc::new(crate::admin::Ctl {
        shared: shared.clone(),
        config_file: Some(std::path::PathBuf::from(&config.file)),
        // Kept only with an admin socket: it is what makes changes.
        state_file: config
            .admin
            .socket
            .as_ref()
            .and(config.admin.state_file.clone()),
        overrides: std::sync::Mutex::new(overrides),
        listeners: std::sync::OnceLock::new(),
    });
    ctl.apply_states();
    let admin = match config.admin.socket {
        Some(_) => Some(crate::admin::AdminSocket::start(
            &config.admin,
            ctl.clone(),
        )?),
        None => None,
    };
    Ok((ctl, admin))
}

/// Raise the file-descriptor limit and size `maxconn` and the idle pools
/// from it (logged, with a warning when the config asks for more than the
/// hard limit allows): the budget and the soft limit now.
fn fd_budget(config: &Config) -> (fdlimit::Budget, u64) {
    let (soft_before, soft, hard) = fdlimit::raise();
    let budget = fdlimit::plan(config, soft_before, soft, hard);
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
    if let Some(w) = fdlimit::maxconn_warning(config, hard) {
        tracing::warn!("{w}");
    }
    (budget, soft)
}

/// ICMP checks need a raw or ping socket: refuse to start without one.
fn icmp_if_needed(config: &Config) -> Result<(), StartError> {
    let icmp = config.backends.iter().flat_map(|b| &b.servers).any(|s| {
        matches!(
            s.health.as_ref().map(|h| &h.kind),
            Some(crate::config::health::CheckKind::Icmp)
        )
    });
    if icmp {
        crate::health::icmp::available().map_err(StartError::Icmp)?;
    }
    Ok(())
}

/// The access log's writer thread, when `[log] access` is on.
fn start_access_log(config: &Config, shared: &Shared) -> Result<Option<Writer>, StartError> {
    let Some(target) = &config.log.access else {
        return Ok(None);
    };
    let (log, handle) = AccessLog::start(
        target.clone(),
        config.log.format,
        config.log.query,
        shared.global.clone(),
    )
    .map_err(|source| StartError::AccessLog {
        path: match target {
            crate::config::LogTarget::Stdout => "stdout".into(),
            crate::config::LogTarget::File(p) => p.display().to_string(),
        },
        source,
    })?;
    Ok(Some((Arc::new(log), handle)))
}

/// The worker threads, each running its tokio runtime until the exit signal;
/// the listeners' accept loops are spawned onto them through their handles.
struct Workers {
    threads: Vec<std::thread::JoinHandle<()>>,
    /// In thread order.
    runtimes: Vec<tokio::runtime::Handle>,
}

impl Workers {
    /// `n` threads: with `per_core`, each a one-thread runtime; else one
    /// runtime of `threads` workers.
    fn start(
        n: usize,
        per_core: bool,
        threads: usize,
        pool_cap: usize,
        exit: &watch::Receiver<bool>,
    ) -> Result<Workers, StartError> {
        let (handle_tx, handle_rx) = std::sync::mpsc::channel();
        let mut handles = Vec::new();
        for t in 0..n {
            let exit = exit.clone();
            let workers = if per_core { 1 } else { threads };
            let handle_tx = handle_tx.clone();
            let h = std::thread::Builder::new()
                .name(format!("fulcrum-{t}"))
                .spawn(move || Workers::run(t, workers, pool_cap, handle_tx, exit))
                .map_err(StartError::Thread)?;
            handles.push(h);
        }
        drop(handle_tx);
        let mut runtimes: Vec<(usize, tokio::runtime::Handle)> = handle_rx.iter().collect();
        if runtimes.len() != n {
            return Err(StartError::Thread(io::Error::other(
                "a worker runtime did not start",
            )));
        }
        runtimes.sort_by_key(|(t, _)| *t);
        Ok(Workers {
            threads: handles,
            runtimes: runtimes.into_iter().map(|(_, h)| h).collect(),
        })
    }

    /// One worker thread: build its runtime, hand its handle over, run until
    /// the exit signal.
    fn run(
        t: usize,
        workers: usize,
        pool_cap: usize,
        handle_tx: std::sync::mpsc::Sender<(usize, tokio::runtime::Handle)>,
        mut exit: watch::Receiver<bool>,
    ) {
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
        // Sent, then let go: the collecting side ends once every worker has
        // answered (or failed).
        let _ = handle_tx.send((t, rt.handle().clone()));
        drop(handle_tx);
        rt.block_on(async move {
            let _ = exit.wait_for(|e| *e).await;
        });
    }
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
    pub fn addrs(&self, name: &str) -> Vec<SocketAddr> {
        self.listening()
            .into_iter()
            .find(|(n, _)| n == name)
            .map_or_else(Vec::new, |(_, a)| a)
    }

    /// The first address of frontend `name`.
    pub fn addr(&self, name: &str) -> Option<SocketAddr> {
        self.addrs(name).first().copied()
    }

    /// Every frontend's bound addresses (as of the configuration serving now).
    pub fn listening(&self) -> Vec<(String, Vec<SocketAddr>)> {
        self.listeners.listening(&self.shared.snapshot().config)
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

    /// What the admin socket drives (the signal handler reloads through it).
    pub fn ctl(&self) -> Arc<crate::admin::Ctl> {
        self.ctl.clone()
    }

    /// The admin socket's paths, when it is on.
    pub fn admin_paths(&self) -> &[std::path::PathBuf] {
        self.admin.as_ref().map_or(&[], |a| a.paths())
    }

    /// Where the stats page listens (port 0 resolved), when it is on.
    pub fn stats_addr(&self) -> Option<SocketAddr> {
        self.web.as_ref().map(crate::web::Web::addr)
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
        self.shared.sessions.stop(false);
        self.listeners.close();
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
            self.shared.sessions.stop(true);
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
        self.listeners.close();
        drop(self.health.take());
        drop(self.web.take());
        drop(self.admin.take());
        if let Some(t) = self.ticker.take() {
            t.stop();
        }
        let _ = self.stop_accepting.send(true);
        let _ = self.force_stop.send(true);
        self.shared.sessions.stop(false);
        self.shared.sessions.stop(true);
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
