//! The runtime snapshot: an immutable view built from a validated `Config`, published
//! through one `ArcSwap`. Request paths load it once per connection and never lock.
//!
//! What must survive a rebuild lives in `Arc`s keyed by name and is carried over by
//! `Runtime::build(.., prev)`: each server's `ServerState` (keyed `backend/server`,
//! kept only while the address is unchanged) and the frontend/backend counters.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;

use crate::balancers::{self, Balance, PickCtx};
use crate::config::routing::{Acl, Persist, Rule};
use crate::config::{BackendTimeouts, Config, Mode};
use crate::server::{Pool, Server, ServerState};
use crate::stats::collect::Collector;
use crate::stats::{BackendCounters, FrontendCounters, GlobalCounters, GlobalStats, Snapshot};
use crate::table::Sticky;

#[derive(Debug)]
pub struct Runtime {
    pub generation: u64,
    pub config: Arc<Config>,
    pub frontends: Vec<FrontendRt>,
    pub backends: Vec<BackendRt>,
}

#[derive(Debug)]
pub struct FrontendRt {
    pub name: Arc<str>,
    pub mode: Mode,
    pub backend: usize,
    pub client_timeout: Duration,
    pub http_request_timeout: Duration,
    pub http_keepalive_timeout: Duration,
    pub accept_proxy: bool,
    /// The kernel hands connections over once their first bytes are there
    /// (or after `listener::DEFER_ACCEPT` of silence).
    pub defer_accept: bool,
    pub x_forwarded: bool,
    pub forwarded: bool,
    pub limits: crate::config::HeadLimits,
    pub error_pages: Vec<crate::config::ErrorPage>,
    pub acls: Vec<Acl>,
    pub rules: Vec<Rule>,
    /// How request paths are normalised (`l7::path`).
    pub path: crate::config::routing::PathOptions,
    /// Per-source limits (`limits.rs`).
    pub source_limits: Option<Arc<crate::limits::Limiter>>,
    /// http: the header field carrying each request's id (`[log] request_id`).
    pub request_id: Option<Arc<str>>,
    /// TLS termination (certificates are the configuration's: a reload
    /// serves new ones to the next handshake).
    pub tls: Option<Arc<crate::tls::FrontendTls>>,
    /// tcp without termination, with SNI ACLs: read the ClientHello's server
    /// name before choosing a backend, then pass every byte through.
    pub inspect_sni: bool,
    pub counters: Arc<FrontendCounters>,
}

#[derive(Debug)]
pub struct BackendRt {
    pub name: Arc<str>,
    pub servers: Vec<Server>,
    pub backups: Vec<Server>,
    balancer: Box<dyn Balance>,
    backup_balancer: Box<dyn Balance>,
    pub timeouts: BackendTimeouts,
    pub retries: u32,
    pub pool_max_idle: u32,
    pub counters: Arc<BackendCounters>,
    /// Shared by this backend's servers: slot wake-ups, total in-flight.
    pub pool: Arc<Pool>,
    pub persist: Option<Persist>,
    /// Passive ejection (`eject.rs`), slow start, and what to do when all are down.
    pub eject: Option<crate::config::health::Eject>,
    pub slowstart: Option<Duration>,
    pub drain_timeout: Duration,
    pub on_all_down: crate::config::health::OnAllDown,
    /// Source persistence entries (carried across reloads by backend name).
    pub sources: Arc<Sticky>,
}

impl BackendRt {
    /// Pick a server: primaries first, backups only when no primary is eligible.
    /// `avoid` is a server that just failed (HAProxy's redispatch).
    /// With `primaries_failed`, every primary was tried and failed for this
    /// connection: the backups are next (without health checks, that is how a
    /// backup takes over from dead primaries).
    pub fn pick(
        &self,
        ctx: &PickCtx<'_>,
        avoid: Option<&Arc<ServerState>>,
        primaries_failed: bool,
    ) -> Option<&Server> {
        let tiers = [
            (&self.servers, &self.balancer),
            (&self.backups, &self.backup_balancer),
        ];
        for (list, bal) in tiers.into_iter().skip(usize::from(primaries_failed)) {
            let mut c = *ctx;
            c.avoid = avoid.and_then(|a| list.iter().position(|s| Arc::ptr_eq(&s.state, a)));
            if let Some(i) = bal.pick(list, &c) {
                return list.get(i);
            }
        }
        None
    }

    /// Feed a latency sample for `server` to a balancer that learns from them.
    pub fn observe(&self, server: &Server, latency: std::time::Duration, now: std::time::Instant) {
        for (list, bal) in [
            (&self.servers, &self.balancer),
            (&self.backups, &self.backup_balancer),
        ] {
            if !bal.learns() {
                continue;
            }
            if let Some(i) = list
                .iter()
                .position(|s| Arc::ptr_eq(&s.state, &server.state))
            {
                bal.observe(i, latency, now);
            }
        }
    }

    /// Whether the balancers read weights once per snapshot (see `Balance`).
    pub fn weights_are_static(&self) -> bool {
        self.balancer.static_weights()
    }

    /// True when some server could take the connection if one of its slots freed up.
    pub fn any_full(&self) -> bool {
        self.servers.iter().chain(&self.backups).any(Server::full)
    }

    pub fn all_servers(&self) -> impl Iterator<Item = &Server> {
        self.servers.iter().chain(&self.backups)
    }

    /// The server whose persistence cookie value is `value`.
    pub fn by_cookie(&self, value: &str) -> Option<&Server> {
        self.all_servers().find(|s| &*s.cookie == value)
    }

    /// The server with live-state id `id`.
    pub fn by_id(&self, id: u64) -> Option<&Server> {
        self.all_servers().find(|s| s.state.id == id)
    }
}

impl Runtime {
    /// Build from a validated config, carrying live state over from `prev` by name.
    pub fn build(cfg: Arc<Config>, prev: Option<&Runtime>, generation: u64) -> Runtime {
        let old = Previous::index(prev);
        let backends = cfg.backends.iter().map(|b| old.backend(b)).collect();
        let frontends = cfg
            .frontends
            .iter()
            .map(|f| old.frontend(f, &cfg))
            .collect();
        Runtime {
            generation,
            config: cfg,
            frontends,
            backends,
        }
    }

    /// Frontend `name`'s position in this snapshot.
    pub fn frontend_index(&self, name: &str) -> Option<usize> {
        self.frontends.iter().position(|f| &*f.name == name)
    }

    pub fn frontend(&self, name: &str) -> Option<&FrontendRt> {
        self.frontends.iter().find(|f| &*f.name == name)
    }

    pub fn backend(&self, name: &str) -> Option<&BackendRt> {
        self.backends.iter().find(|b| &*b.name == name)
    }

    /// The counters and state of every frontend, backend and server (the
    /// collector's rates and percentiles are added by `Shared::stats`).
    pub fn stats(&self) -> Snapshot {
        let cfg = &self.config;
        Snapshot {
            global: Default::default(),
            frontends: self
                .frontends
                .iter()
                .map(|f| {
                    let mut s = f.counters.snapshot(&f.name);
                    s.mode = match f.mode {
                        Mode::Tcp => "tcp",
                        Mode::Http => "http",
                    };
                    s.conn_limit = cfg
                        .frontends
                        .iter()
                        .find(|c| *c.name == *f.name)
                        .and_then(|c| c.maxconn)
                        .map_or(0, u64::from);
                    s
                })
                .collect(),
            backends: self
                .backends
                .iter()
                .map(|b| {
                    let servers = b.all_servers().map(Server::snapshot).collect();
                    let mut s = b.counters.snapshot(&b.name, servers);
                    s.balance = cfg
                        .backends
                        .iter()
                        .find(|c| *c.name == *b.name)
                        .map_or("", |c| c.algorithm.name());
                    s
                })
                .collect(),
        }
    }

    /// Every server's latency buckets, by live-state id.
    pub fn recorders(&self) -> HashMap<u64, &crate::stats::latency::Recorder> {
        self.backends
            .iter()
            .flat_map(|b| b.all_servers())
            .map(|s| (s.state.id, &s.state.latency))
            .collect()
    }
}

/// What the process knows of itself, for the stats (set once at start).
#[derive(Debug, Clone, Copy, Default)]
pub struct Facts {
    pub fd_limit: u64,
    pub maxconn: u64,
    pub threads: u64,
    pub histograms: bool,
}

/// The handle every task holds: readers never block; writers are serialised.
#[derive(Debug)]
pub struct Shared {
    current: ArcSwap<Runtime>,
    write_lock: std::sync::Mutex<()>,
    /// The generation now serving, for those who follow changes (health).
    generation: tokio::sync::watch::Sender<u64>,
    /// The same, for a request path to compare with one relaxed load.
    generation_now: std::sync::atomic::AtomicU64,
    /// The process's own counters (reloads, access log).
    pub global: Arc<GlobalCounters>,
    /// Rates, histories and latency windows (ticked by the stats thread).
    pub collector: Collector,
    pub facts: std::sync::OnceLock<Facts>,
    started: (std::time::Instant, std::time::SystemTime),
    /// The open client connections (`sessions.rs`).
    pub sessions: Arc<crate::sessions::Sessions>,
    /// Per frontend name: accepting is paused (`disable frontend`); kept
    /// across reloads.
    gates: std::sync::Mutex<HashMap<String, tokio::sync::watch::Sender<bool>>>,
    /// The last reload: when (Unix seconds), and its generation or its error.
    last_reload: std::sync::Mutex<Option<(u64, Result<u64, String>)>>,
    /// Servers a reload removed while they still carried connections.
    retired: std::sync::Mutex<Vec<Retired>>,
}

/// A server a reload removed, draining: in the stats (status "drain",
/// `removed`) until its last connection ends, cut at `deadline`.
#[derive(Debug)]
struct Retired {
    backend: Arc<str>,
    server: Server,
    deadline: std::time::Instant,
}

impl Shared {
    pub fn new(cfg: Arc<Config>) -> Shared {
        Shared {
            current: ArcSwap::from_pointee(Runtime::build(cfg, None, 1)),
            write_lock: std::sync::Mutex::new(()),
            generation: tokio::sync::watch::Sender::new(1),
            generation_now: std::sync::atomic::AtomicU64::new(1),
            global: Arc::default(),
            collector: Collector::default(),
            facts: std::sync::OnceLock::new(),
            started: (std::time::Instant::now(), std::time::SystemTime::now()),
            sessions: Arc::default(),
            gates: std::sync::Mutex::default(),
            last_reload: std::sync::Mutex::default(),
            retired: std::sync::Mutex::default(),
        }
    }

    /// Drained servers leave; those past their backend's `drain_timeout` have
    /// their connections closed (counted in `drain_cut`) and leave. Called by
    /// the stats thread every second.
    pub fn sweep_retired(&self) {
        let now = std::time::Instant::now();
        let mut retired = self.retired.lock().unwrap_or_else(|e| e.into_inner());
        retired.retain(|r| {
            let open = r.server.state.inflight();
            if open == 0 {
                tracing::info!(backend = %r.backend, server = %r.server.name, "removed server drained; it leaves the stats");
                return false;
            }
            if now < r.deadline {
                return true;
            }
            let cut = self.sessions.kill_server(r.server.state.id);
            self.global.drain_cut.add(cut as u64);
            tracing::warn!(backend = %r.backend, server = %r.server.name, connections = cut, "removed server still busy at its drain_timeout: its connections are closed");
            false
        });
    }

    /// Keep the servers that `old` has and `new` does not, while busy.
    fn retire(&self, old: &Runtime, new: &Runtime) {
        let now = std::time::Instant::now();
        let mut retired = self.retired.lock().unwrap_or_else(|e| e.into_inner());
        // Back in the new configuration: no longer draining as removed.
        retired.retain(|r| {
            new.backend(&r.backend)
                .is_none_or(|b| b.all_servers().all(|s| s.name != r.server.name))
        });
        for b in &old.backends {
            let kept = new.backend(&b.name);
            let timeout = kept.map_or(b.drain_timeout, |k| k.drain_timeout);
            for s in b.all_servers() {
                let still =
                    kept.is_some_and(|k| k.all_servers().any(|n| Arc::ptr_eq(&n.state, &s.state)));
                if still || s.state.inflight() == 0 {
                    continue;
                }
                tracing::info!(backend = %b.name, server = %s.name, connections = s.state.inflight(), timeout = ?timeout, "server removed by a reload: draining");
                retired.push(Retired {
                    backend: b.name.clone(),
                    server: s.clone(),
                    deadline: now + timeout,
                });
            }
        }
    }

    /// Record a reload's outcome (its generation, or its error's first line).
    pub fn note_reload(&self, outcome: Result<u64, String>) {
        let at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        *self.last_reload.lock().unwrap_or_else(|e| e.into_inner()) = Some((at, outcome));
    }

    /// Follow whether frontend `name` is paused (accepting nothing).
    pub fn frontend_gate(&self, name: &str) -> tokio::sync::watch::Receiver<bool> {
        let mut g = self.gates.lock().unwrap_or_else(|e| e.into_inner());
        g.entry(name.to_string())
            .or_insert_with(|| tokio::sync::watch::Sender::new(false))
            .subscribe()
    }

    /// Pause or resume accepting on frontend `name`; whether it changed.
    pub fn set_frontend_paused(&self, name: &str, paused: bool) -> bool {
        let mut g = self.gates.lock().unwrap_or_else(|e| e.into_inner());
        let tx = g
            .entry(name.to_string())
            .or_insert_with(|| tokio::sync::watch::Sender::new(false));
        tx.send_if_modified(|p| std::mem::replace(p, paused) != paused)
    }

    pub fn frontend_paused(&self, name: &str) -> bool {
        let g = self.gates.lock().unwrap_or_else(|e| e.into_inner());
        g.get(name).is_some_and(|tx| *tx.borrow())
    }

    /// Every counter, with the process's facts, the collector's rates and
    /// (with histograms on) the latency percentiles.
    pub fn stats(&self) -> Snapshot {
        let rt = self.snapshot();
        let mut snap = rt.stats();
        self.add_retired(&mut snap);
        let facts = self.facts.get().copied().unwrap_or_default();
        snap.global = GlobalStats {
            version: env!("CARGO_PKG_VERSION"),
            pid: std::process::id(),
            started_at: self
                .started
                .1
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            uptime_s: self.started.0.elapsed().as_secs(),
            generation: rt.generation,
            fd_limit: facts.fd_limit,
            maxconn: facts.maxconn,
            threads: facts.threads,
            conn_cur: snap.frontends.iter().map(|f| f.conn_cur).sum(),
            last_reload: self
                .last_reload
                .lock()
                .map(|r| r.clone())
                .unwrap_or_default(),
            base: self.global.values(),
        };
        self.collector.fill(&mut snap, facts.histograms);
        snap
    }

    /// The draining removed servers, under their backend when it still exists.
    fn add_retired(&self, snap: &mut Snapshot) {
        let retired = self.retired.lock().unwrap_or_else(|e| e.into_inner());
        for r in retired.iter() {
            if let Some(b) = snap.backends.iter_mut().find(|b| *b.name == *r.backend) {
                let mut s = r.server.snapshot();
                s.status = "drain".into();
                s.removed = true;
                b.servers.push(s);
            }
        }
    }

    /// One collector step (the stats thread calls it every second).
    pub fn tick(&self) {
        self.sweep_retired();
        let rt = self.snapshot();
        let snap = rt.stats();
        self.collector.tick(&snap, &rt.recorders());
    }

    /// The generation serving now (compare with a snapshot's `generation`).
    #[inline]
    pub fn generation(&self) -> u64 {
        self.generation_now
            .load(std::sync::atomic::Ordering::Acquire)
    }

    /// The current snapshot, for one connection.
    pub fn snapshot(&self) -> Arc<Runtime> {
        self.current.load_full()
    }

    /// Build a new snapshot from `cfg` and swap it in; returns its generation.
    pub fn replace(&self, cfg: Arc<Config>) -> u64 {
        let _writer = self.write_lock.lock().unwrap_or_else(|e| e.into_inner());
        let old = self.current.load_full();
        let new = Runtime::build(cfg, Some(&old), old.generation + 1);
        self.retire(&old, &new);
        let generation = new.generation;
        self.current.store(Arc::new(new));
        self.generation_now
            .store(generation, std::sync::atomic::Ordering::Release);
        self.generation.send_replace(generation);
        generation
    }

    /// A new snapshot of the same configuration (weights in effect re-read).
    pub fn rebuild(&self) -> u64 {
        self.replace(self.snapshot().config.clone())
    }

    /// Follow the generations swapped in.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.generation.subscribe()
    }
}

/// The snapshot a new one replaces, by name: what carries over (servers'
/// live state, counters, idle pools, persistence tables).
struct Previous<'p> {
    servers: HashMap<(&'p str, &'p str), &'p Server>,
    backends: HashMap<&'p str, &'p BackendRt>,
    frontends: HashMap<&'p str, &'p FrontendRt>,
}

impl<'p> Previous<'p> {
    fn index(prev: Option<&'p Runtime>) -> Previous<'p> {
        let mut old = Previous {
            servers: HashMap::new(),
            backends: HashMap::new(),
            frontends: HashMap::new(),
        };
        for b in prev.iter().flat_map(|p| &p.backends) {
            old.backends.insert(&b.name, b);
            for s in b.all_servers() {
                old.servers.insert((&b.name, &s.name), s);
            }
        }
        for f in prev.iter().flat_map(|p| &p.frontends) {
            old.frontends.insert(&f.name, f);
        }
        old
    }

    fn backend(&self, b: &crate::config::Backend) -> BackendRt {
        let prev_be = self.backends.get(b.name.as_str());
        let pool = prev_be.map_or_else(Arc::default, |p| p.pool.clone());
        let (mut servers, mut backups) = (Vec::new(), Vec::new());
        for s in &b.servers {
            let server = self.server(&b.name, s, &pool);
            if s.backup {
                backups.push(server);
            } else {
                servers.push(server);
            }
        }
        // Carried over unless the table's size changed.
        let size = match &b.persist {
            Some(crate::config::routing::Persist::Source { size, .. }) => *size,
            _ => 1,
        };
        let sources = prev_be
            .map(|p| p.sources.clone())
            .filter(|t| t.size() == size)
            .unwrap_or_else(|| Arc::new(Sticky::new(size)));
        BackendRt {
            name: b.name.as_str().into(),
            balancer: balancers::build(&b.algorithm, &servers),
            backup_balancer: balancers::build(&b.algorithm, &backups),
            servers,
            backups,
            timeouts: b.timeouts,
            retries: b.retries,
            pool_max_idle: b.pool_max_idle,
            counters: prev_be.map_or_else(Default::default, |p| p.counters.clone()),
            pool,
            persist: b.persist.clone(),
            eject: b.eject,
            slowstart: b.slowstart,
            drain_timeout: b.drain_timeout,
            on_all_down: b.on_all_down,
            sources,
        }
    }

    /// A server keeps its live state when its name and address are the same.
    fn server(&self, backend: &str, s: &crate::config::ServerConfig, pool: &Arc<Pool>) -> Server {
        let state = match self.servers.get(&(backend, s.name.as_str())) {
            Some(old) if old.addr == s.addr => {
                old.state.set_target_weight(s.weight);
                old.state.clone()
            }
            _ => {
                let st = ServerState::new(s.weight, pool.clone());
                if s.health.is_some() {
                    // A checked server starts down; its first check decides.
                    st.set_health(false);
                }
                Arc::new(st)
            }
        };
        Server {
            name: s.name.as_str().into(),
            addr: s.addr,
            weight: s.weight,
            maxconn: s.maxconn,
            send_proxy: s.send_proxy,
            cookie: s.cookie.as_str().into(),
            backup: s.backup,
            check: s.health.as_ref().map(|h| (h.rise, h.fall)),
            tls: s.tls.clone(),
            state,
        }
    }

    fn frontend(&self, f: &crate::config::Frontend, cfg: &Config) -> FrontendRt {
        FrontendRt {
            name: f.name.as_str().into(),
            mode: f.mode,
            backend: f.default_backend,
            client_timeout: f.timeouts.client,
            http_request_timeout: f.timeouts.http_request,
            http_keepalive_timeout: f.timeouts.http_keepalive,
            accept_proxy: f.accept_proxy,
            defer_accept: f.defer_accept,
            x_forwarded: f.x_forwarded,
            forwarded: f.forwarded,
            limits: crate::config::HeadLimits {
                max_head: f.max_head_size as usize,
                max_headers: f.max_headers as usize,
            },
            error_pages: f.error_pages.clone(),
            acls: f.acls.clone(),
            rules: f.rules.clone(),
            path: f.path,
            source_limits: f
                .source_limits
                .clone()
                .map(|l| Arc::new(crate::limits::Limiter::new(l))),
            request_id: cfg.log.request_id.as_deref().map(Arc::from),
            tls: f.tls.clone(),
            // tcp rules on SNI without terminating TLS: peek at the ClientHello.
            inspect_sni: f.mode == Mode::Tcp
                && f.tls.is_none()
                && f.acls.iter().any(|a| {
                    matches!(
                        a.matcher,
                        crate::config::routing::Matcher::Sni(_)
                            | crate::config::routing::Matcher::SniSuffix(_)
                            | crate::config::routing::Matcher::Tls(_)
                    )
                }),
            counters: self
                .frontends
                .get(f.name.as_str())
                .map_or_else(Default::default, |p| p.counters.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::Status;

    fn cfg(servers: &str) -> Arc<Config> {
        let text = format!(
            "[[frontend]]\nname = \"f\"\nlisten = [\"127.0.0.1:0\"]\ndefault_backend = \"b\"\n\n[[backend]]\nname = \"b\"\nservers = [{servers}]\n"
        );
        Arc::new(crate::config::parse("t.toml", &text).unwrap())
    }

    #[test]
    fn rebuild_carries_server_state_by_name_and_address() {
        let shared = Shared::new(cfg(
            r#"{ name = "a", address = "127.0.0.1:1" }, { name = "b", address = "127.0.0.1:2" }"#,
        ));
        let old = shared.snapshot();
        old.backends[0].servers[0]
            .state
            .set_admin(crate::server::Admin::Drain);
        old.backends[0].servers[0].state.counters.conn_total.inc();
        old.backends[0].counters.retries.inc();
        // "a" keeps name and address; "b" moves; "c" is new.
        let generation = shared.replace(cfg(
            r#"{ name = "a", address = "127.0.0.1:1", weight = 7 }, { name = "b", address = "127.0.0.1:3" }, { name = "c", address = "127.0.0.1:4" }"#,
        ));
        assert_eq!(generation, 2);
        let new = shared.snapshot();
        let s = &new.backends[0].servers;
        assert!(Arc::ptr_eq(&s[0].state, &old.backends[0].servers[0].state));
        assert_eq!(s[0].state.status(), Status::Drain);
        assert_eq!(s[0].state.effective_weight(), 7);
        assert!(!Arc::ptr_eq(&s[1].state, &old.backends[0].servers[1].state));
        assert_eq!(s[2].state.status(), Status::Up);
        assert_eq!(
            new.stats().backends[0].retries,
            1,
            "backend counters carried over"
        );
        assert_eq!(new.stats().backends[0].servers[0].conn_total, 1);
    }
}
