//! Configuration: the TOML schema, its validation, and the validated `Config`.
//!
//! `load(path)` reads and validates a file; `parse(name, text)` does the same for a
//! string (tests use it). The result never touches sockets: addresses are parsed and
//! checked, not bound.

mod error;
mod file;
pub mod health;
pub mod routing;
pub mod units;
mod validate;
mod validate_backend;
mod validate_frontend;
mod validate_health;
mod validate_l7;
mod validate_obs;
mod validate_tls;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

pub use error::{ConfigError, ConfigErrors};
pub use file::{Mode, ProxyVersion, Threading};

/// A validated configuration. Every reference is resolved, every default applied.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it came from (for messages).
    pub file: String,
    pub global: Global,
    pub stats: Stats,
    pub log: Log,
    pub admin: Admin,
    pub frontends: Vec<Frontend>,
    pub backends: Vec<Backend>,
    /// What `check` and `run` point out without refusing the file.
    pub warnings: Vec<ConfigError>,
}

#[derive(Debug, Clone)]
pub struct Global {
    /// Worker threads (default: the number of cores).
    pub threads: usize,
    pub threading: Threading,
    /// Connections accepted at once over all frontends; `None` = no global cap.
    pub maxconn: Option<u32>,
    /// tracing filter directive (`RUST_LOG` overrides it).
    pub log_level: String,
    /// Forward tcp-mode bytes with splice(2) (default) or by copying.
    pub splice: bool,
    /// How long open connections may run after a stop signal.
    pub grace: Duration,
    /// http: an idle client connection leaves the runtime for the thread's park
    /// after this long (README, "Idle connections"); `None` = never.
    pub idle_park_after: Option<Duration>,
}

/// `[stats]`: where the stats page listens, who may see it, what it may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stats {
    /// Off unless set.
    pub listen: Option<SocketAddr>,
    pub auth: Option<Auth>,
    /// The page may drain, disable and enable servers.
    pub admin: bool,
    /// Per-server latency buckets (default on).
    pub histograms: bool,
}

impl Default for Stats {
    fn default() -> Stats {
        Stats {
            listen: None,
            auth: None,
            admin: false,
            histograms: true,
        }
    }
}

/// Basic authentication for the stats page; the password is read from a
/// file or an environment variable at load time, never written in the config.
#[derive(Clone, PartialEq, Eq)]
pub struct Auth {
    pub user: String,
    pub password: String,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Auth {{ user: {:?}, password: <hidden> }}", self.user)
    }
}

/// `[admin]`: the admin socket and where runtime changes are kept.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Admin {
    /// Off unless set.
    pub socket: Option<std::path::PathBuf>,
    /// The socket files' permissions (default 0o600) and group.
    pub mode: u32,
    pub group: Option<String>,
    /// A second socket that answers only `show` commands.
    pub read_only_socket: Option<std::path::PathBuf>,
    /// Runtime changes, re-applied on reload and restart (default
    /// `<config>.state`; `None` with `state_file = "off"`).
    pub state_file: Option<std::path::PathBuf>,
}

/// Where the access log's lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogTarget {
    Stdout,
    File(std::path::PathBuf),
}

/// How an access log line looks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// `[log]`: the access log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Log {
    /// `None`: off.
    pub access: Option<LogTarget>,
    pub format: LogFormat,
    /// Log the query string with the path.
    pub query: bool,
    /// http: the header field that carries each request's id to the server.
    pub request_id: Option<String>,
}

impl Default for Log {
    fn default() -> Log {
        Log {
            access: Some(LogTarget::Stdout),
            format: LogFormat::Text,
            query: false,
            request_id: None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Frontend {
    pub name: String,
    pub listen: Vec<SocketAddr>,
    pub mode: Mode,
    pub maxconn: Option<u32>,
    pub backlog: u32,
    /// The kernel hands a connection over once its first bytes arrived
    /// (TCP_DEFER_ACCEPT, `listener::DEFER_ACCEPT`).
    pub defer_accept: bool,
    pub timeouts: FrontendTimeouts,
    /// Index into `Config::backends`.
    pub default_backend: usize,
    pub accept_proxy: bool,
    /// http: add X-Forwarded-For and X-Forwarded-Proto.
    pub x_forwarded: bool,
    /// http: add an RFC 7239 Forwarded field.
    pub forwarded: bool,
    pub max_head_size: u32,
    pub max_headers: u32,
    /// http: (status, content type, body) replacing fulcrum's own error bodies.
    pub error_pages: Vec<ErrorPage>,
    /// http: named ACLs, referenced by index from `rules`.
    pub acls: Vec<routing::Acl>,
    /// http: ordered rules (see README "Routing").
    pub rules: Vec<routing::Rule>,
    /// http: how request paths are normalised (see `l7::path`).
    pub path: routing::PathOptions,
    /// Per-source limits (see `limits.rs`).
    pub source_limits: Option<routing::SourceLimits>,
    /// TLS termination (`tls.rs`).
    pub tls: Option<std::sync::Arc<crate::tls::FrontendTls>>,
}

/// Header-count and size limits (HAProxy-like defaults).
#[derive(Debug, Clone, Copy)]
pub struct HeadLimits {
    /// Request line + headers, bytes (431 past it; 414 if the request line alone is).
    pub max_head: usize,
    /// Header fields (431 past it).
    pub max_headers: usize,
}

impl Default for HeadLimits {
    fn default() -> Self {
        HeadLimits {
            max_head: 16 * 1024,
            max_headers: 100,
        }
    }
}

/// An operator-supplied body for one error status, read when the config loads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorPage {
    pub status: u16,
    pub content_type: &'static str,
    pub body: std::sync::Arc<[u8]>,
}

#[derive(Debug, Clone, Copy)]
pub struct FrontendTimeouts {
    /// Inactivity on the client side.
    pub client: Duration,
    /// http: the whole request head must arrive within this (slowloris).
    pub http_request: Duration,
    /// http: how long an idle keep-alive client connection is kept.
    pub http_keepalive: Duration,
}

#[derive(Debug, Clone)]
pub struct Backend {
    pub name: String,
    pub algorithm: Algorithm,
    pub timeouts: BackendTimeouts,
    /// Extra connect attempts after the first one fails.
    pub retries: u32,
    /// http: idle keep-alive connections kept per server and worker thread.
    pub pool_max_idle: u32,
    /// Set when the file says which frontend mode may use this backend.
    pub mode: Option<Mode>,
    pub persist: Option<routing::Persist>,
    /// A server coming back up ramps its weight over this long.
    pub slowstart: Option<Duration>,
    /// A server a reload removes keeps its open connections this long at
    /// most, then they are closed.
    pub drain_timeout: Duration,
    /// TLS to its servers (`tls.rs`).
    pub tls: Option<std::sync::Arc<crate::tls::UpstreamTls>>,
    pub eject: Option<health::Eject>,
    pub on_all_down: health::OnAllDown,
    pub servers: Vec<ServerConfig>,
}

#[derive(Debug, Clone, Copy)]
pub struct BackendTimeouts {
    pub connect: Duration,
    /// Inactivity on the server side.
    pub server: Duration,
    /// How long a connection waits for a server slot when every server is at maxconn.
    pub queue: Duration,
    /// http: how long an idle keep-alive server connection is kept.
    pub pool_idle: Duration,
}

/// Load-balancing algorithm of a backend, fully typed. README's "Balancing"
/// section states each one's semantics; `src/balancers/` implements them.
#[derive(Debug, Clone, PartialEq)]
pub enum Algorithm {
    Rr,
    Wrr,
    Lc,
    Wlc,
    Random,
    P2c,
    P2cEwma { decay: Duration },
    Sh { prefix: bool, factor: Option<f64> },
    Dh { factor: Option<f64> },
    Uri { key: UriKey, factor: Option<f64> },
    UrlParam { param: String, factor: Option<f64> },
    Lblc { expire: Duration },
    Lblcr { expire: Duration, shrink: Duration },
}

/// How much of the request path `uri` hashes (HAProxy's `balance uri` options).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UriKey {
    /// Include the query string.
    pub whole: bool,
    /// Only the first N path segments (`/a/b/c` with depth 2 → `/a/b`).
    pub depth: Option<u16>,
    /// Only the first N characters (after `depth`).
    pub len: Option<u16>,
}

impl Algorithm {
    pub const NAMES: &'static [&'static str] = &[
        "rr",
        "wrr",
        "lc",
        "wlc",
        "random",
        "p2c",
        "p2c_ewma",
        "sh",
        "dh",
        "uri",
        "url_param",
        "lblc",
        "lblcr",
    ];

    pub fn name(&self) -> &'static str {
        match self {
            Algorithm::Rr => "rr",
            Algorithm::Wrr => "wrr",
            Algorithm::Lc => "lc",
            Algorithm::Wlc => "wlc",
            Algorithm::Random => "random",
            Algorithm::P2c => "p2c",
            Algorithm::P2cEwma { .. } => "p2c_ewma",
            Algorithm::Sh { .. } => "sh",
            Algorithm::Dh { .. } => "dh",
            Algorithm::Uri { .. } => "uri",
            Algorithm::UrlParam { .. } => "url_param",
            Algorithm::Lblc { .. } => "lblc",
            Algorithm::Lblcr { .. } => "lblcr",
        }
    }

    /// Whether the algorithm's key exists only in an HTTP request.
    pub fn needs_http(&self) -> bool {
        matches!(self, Algorithm::Uri { .. } | Algorithm::UrlParam { .. })
    }
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub name: String,
    pub addr: SocketAddr,
    /// 0..=256; 0 takes no new traffic.
    pub weight: u32,
    pub maxconn: Option<u32>,
    pub backup: bool,
    pub send_proxy: Option<ProxyVersion>,
    /// Cookie persistence: the value that names this server.
    pub cookie: String,
    /// Its active check (the backend's, with this server's overrides), if any.
    pub health: Option<health::HealthCheck>,
    /// TLS to it (its own `tls`, else its backend's).
    pub tls: Option<std::sync::Arc<crate::tls::UpstreamTls>>,
}

/// Defaults, in one place so README and code agree.
pub mod defaults {
    use std::time::Duration;
    pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);
    pub const HTTP_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
    pub const HTTP_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);
    pub const MAX_HEAD_SIZE: u32 = 16 * 1024;
    pub const MAX_HEADERS: u32 = 100;
    pub const SERVER_TIMEOUT: Duration = Duration::from_secs(60);
    pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
    pub const QUEUE_TIMEOUT: Duration = Duration::from_secs(5);
    pub const RETRIES: u32 = 3;
    /// No per-server limit: the thread's share of the descriptor budget bounds the pool.
    pub const POOL_MAX_IDLE: u32 = u32::MAX;
    pub const POOL_IDLE: Duration = Duration::from_secs(10);
    pub const BACKLOG: u32 = 1024;
    pub const GRACE: Duration = Duration::from_secs(10);
    pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
    pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(60);
    pub const IDLE_PARK_AFTER: Duration = Duration::from_millis(50);
    pub const WEIGHT: u32 = 1;
    pub const MAX_WEIGHT: u32 = 256;
    pub const LOG_LEVEL: &str = "info";
    /// LVS's default `lblc_expiration`.
    pub const LBLC_EXPIRE: Duration = Duration::from_secs(24 * 3600);
    /// LVS's lblcr entry timeout.
    pub const LBLCR_EXPIRE: Duration = Duration::from_secs(6 * 60);
    /// LVS's default `lblcr_expiration`: a set unchanged this long sheds a member.
    pub const LBLCR_SHRINK: Duration = Duration::from_secs(24 * 3600);
    pub const EWMA_DECAY: Duration = Duration::from_secs(10);
    /// Sources a frontend's per-source limits remember.
    pub const LIMITS_TABLE_SIZE: u32 = 100_000;
    /// A source not seen for this long is forgotten by the limits.
    pub const LIMITS_EXPIRE: Duration = Duration::from_secs(60);
}

/// Read and validate a config file.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let name = path.display().to_string();
    match std::fs::read_to_string(path) {
        Ok(text) => parse(&name, &text),
        Err(e) => Err(ConfigErrors(vec![ConfigError {
            file: name,
            line: 0,
            col: 0,
            message: format!("cannot read the file: {e}"),
        }])),
    }
}

/// Validate config text; `file` is only used in messages.
pub fn parse(file: &str, text: &str) -> Result<Config, ConfigErrors> {
    validate::validate(file, text)
}

impl Config {
    /// A short human summary, printed by `fulcrum check`.
    pub fn summary(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let servers: usize = self.backends.iter().map(|b| b.servers.len()).sum();
        let _ = writeln!(
            s,
            "{}: ok: {} frontend(s), {} backend(s), {} server(s), {} thread(s)",
            self.file,
            self.frontends.len(),
            self.backends.len(),
            servers,
            self.global.threads
        );
        for f in &self.frontends {
            let addrs: Vec<String> = f.listen.iter().map(|a| a.to_string()).collect();
            let _ = writeln!(
                s,
                "  frontend {:?} mode {} on {} -> backend {:?}",
                f.name,
                match f.mode {
                    Mode::Tcp => "tcp",
                    Mode::Http => "http",
                },
                addrs.join(", "),
                self.backends[f.default_backend].name
            );
            if !f.rules.is_empty() || !f.acls.is_empty() {
                let _ = writeln!(s, "    {} ACL(s), {} rule(s)", f.acls.len(), f.rules.len());
            }
        }
        for b in &self.backends {
            let list: Vec<String> = b
                .servers
                .iter()
                .map(|sv| {
                    format!(
                        "{} {} w{}{}",
                        sv.name,
                        sv.addr,
                        sv.weight,
                        if sv.backup { " backup" } else { "" }
                    )
                })
                .collect();
            let persist = match &b.persist {
                None => String::new(),
                Some(routing::Persist::Cookie { name, .. }) => format!(", persist cookie {name:?}"),
                Some(routing::Persist::Source { expire, .. }) => {
                    format!(", persist source for {}", units::fmt_duration(*expire))
                }
            };
            let _ = writeln!(
                s,
                "  backend {:?} balance {}{persist}: {}",
                b.name,
                b.algorithm.name(),
                list.join(", ")
            );
        }
        s
    }

    pub fn backend(&self, name: &str) -> Option<&Backend> {
        self.backends.iter().find(|b| b.name == name)
    }
}
