//! Plain copies of the counters, the state around them, and what the
//! collector adds (rates, latency percentiles): what every face renders.

use super::latency::Phase;
use super::{
    BackendCounters, BackendValues, FrontendBaseValues, FrontendCounters, GlobalValues,
    HTTP_REJECT_CLASSES, Rejected, ServerValues,
};

/// Per-second rates, as the collector measured them over the last whole
/// second, and the highest seen.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rates {
    pub conn_rate: u64,
    pub conn_rate_max: u64,
    pub req_rate: u64,
    pub req_rate_max: u64,
}

/// Percentiles of one phase over one window, in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Percentiles {
    pub count: u64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
    pub mean: u64,
    /// The sum of the values (each counted at its bucket's midpoint).
    pub sum: u64,
}

/// The windows latency is summarised over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    Last10s,
    Last5m,
    SinceStart,
}

impl Window {
    pub const ALL: [Window; 3] = [Window::Last10s, Window::Last5m, Window::SinceStart];

    pub fn as_str(self) -> &'static str {
        match self {
            Window::Last10s => "10s",
            Window::Last5m => "5m",
            Window::SinceStart => "total",
        }
    }

    /// Seconds it covers (`None`: since start).
    pub fn seconds(self) -> Option<usize> {
        match self {
            Window::Last10s => Some(10),
            Window::Last5m => Some(300),
            Window::SinceStart => None,
        }
    }
}

/// Latency percentiles per window and phase: `by[window][phase]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Latency {
    pub by: [[Percentiles; 4]; 3],
}

impl Latency {
    pub fn get(&self, w: Window, p: Phase) -> &Percentiles {
        &self.by[w as usize][p as usize]
    }
}

/// The process: version, uptime, configuration generation, limits.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GlobalStats {
    pub version: &'static str,
    pub pid: u32,
    /// Seconds since the Unix epoch when the daemon started, and since then.
    pub started_at: u64,
    pub uptime_s: u64,
    /// The configuration generation serving (1 at start, +1 per swap).
    pub generation: u64,
    /// The file-descriptor limit and the process-wide connection limit.
    pub fd_limit: u64,
    pub maxconn: u64,
    pub threads: u64,
    /// Client connections open now, over every frontend.
    pub conn_cur: u64,
    /// The last reload: when (Unix seconds), and the generation it made or
    /// why it was refused.
    pub last_reload: Option<(u64, Result<u64, String>)>,
    pub base: GlobalValues,
}

impl std::ops::Deref for GlobalStats {
    type Target = GlobalValues;
    fn deref(&self) -> &GlobalValues {
        &self.base
    }
}

/// A plain copy of a frontend's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FrontendStats {
    pub name: String,
    /// "tcp" or "http".
    pub mode: &'static str,
    /// Its `maxconn` (0: only the process's).
    pub conn_limit: u64,
    pub base: FrontendBaseValues,
    /// 1xx..5xx, other.
    pub http_responses: [u64; 6],
    /// (class, count) for every class with a non-zero count.
    pub http_rejected: Vec<(&'static str, u64)>,
    pub last_rejected: Vec<Rejected>,
    pub rates: Rates,
}

impl std::ops::Deref for FrontendStats {
    type Target = FrontendBaseValues;
    fn deref(&self) -> &FrontendBaseValues {
        &self.base
    }
}

impl FrontendStats {
    /// Requests refused as malformed, of class `class`.
    pub fn rejected(&self, class: &str) -> u64 {
        self.http_rejected
            .iter()
            .find(|(c, _)| *c == class)
            .map_or(0, |(_, n)| *n)
    }

    /// Requests refused before reaching a backend for being malformed or
    /// slow (HAProxy's `ereq`): every rejection class and the 408s.
    pub fn request_errors(&self) -> u64 {
        self.http_rejected.iter().map(|(_, n)| n).sum::<u64>() + self.http_request_timeouts
    }

    /// Connections or requests refused by a rule or a limit (HAProxy's `dreq`).
    pub fn denied(&self) -> u64 {
        self.http_denied + self.limit_conns + self.limit_conn_rate + self.limit_req_rate
    }
}

impl FrontendCounters {
    pub fn snapshot(&self, name: &str) -> FrontendStats {
        FrontendStats {
            name: name.to_string(),
            base: self.base.values(),
            http_responses: self.http_responses.values(),
            http_rejected: HTTP_REJECT_CLASSES
                .iter()
                .zip(&self.http_rejected)
                .filter(|(_, c)| c.get() > 0)
                .map(|(n, c)| (*n, c.get()))
                .collect(),
            last_rejected: self
                .last_rejected
                .lock()
                .map(|q| q.iter().cloned().collect())
                .unwrap_or_default(),
            ..FrontendStats::default()
        }
    }
}

/// A plain copy of a backend's counters and its servers'.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BackendStats {
    pub name: String,
    /// The balancing algorithm.
    pub balance: &'static str,
    pub base: BackendValues,
    /// 1xx..5xx, other.
    pub http_responses: [u64; 6],
    pub servers: Vec<ServerStats>,
    pub rates: Rates,
    /// Its servers' latencies merged (none without histograms).
    pub latency: Option<Box<Latency>>,
}

impl std::ops::Deref for BackendStats {
    type Target = BackendValues;
    fn deref(&self) -> &BackendValues {
        &self.base
    }
}

impl BackendStats {
    pub fn server(&self, name: &str) -> Option<&ServerStats> {
        self.servers.iter().find(|s| s.name == name)
    }

    /// Servers that may take traffic (up or draining, primaries and backups).
    pub fn servers_up(&self) -> usize {
        self.servers
            .iter()
            .filter(|s| s.status == "up" || s.status == "drain")
            .count()
    }

    /// "UP" while a server can take a new connection, else "DOWN".
    pub fn status(&self) -> &'static str {
        if self.servers.iter().any(|s| s.status == "up") {
            "UP"
        } else {
            "DOWN"
        }
    }

    /// Connections open to its servers now.
    pub fn conn_cur(&self) -> u64 {
        self.servers.iter().map(|s| s.conn_cur).sum()
    }
}

impl BackendCounters {
    pub fn snapshot(&self, name: &str, servers: Vec<ServerStats>) -> BackendStats {
        BackendStats {
            name: name.to_string(),
            base: self.values(),
            http_responses: self.http_responses.values(),
            servers,
            ..BackendStats::default()
        }
    }
}

/// A plain copy of a server's counters and state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerStats {
    pub name: String,
    /// Its live-state id (unique in the process; kept across reloads while
    /// the name and address stay).
    pub id: u64,
    pub addr: String,
    /// A backup server (takes traffic only when no primary can).
    pub backup: bool,
    /// What the balancers see: "up", "down", "drain" or "maint".
    pub status: String,
    /// The operator's state: "ready", "drain" or "maint".
    pub admin: String,
    /// The checks' verdict ("up" or "down"; "up" without checks).
    pub health: String,
    /// Passive ejection under way.
    pub ejected: bool,
    /// Its backend is failing open (every server down).
    pub fail_open: bool,
    /// The weight in effect (slow start, a script's dynamic weight), and the
    /// one configured (or set by the operator).
    pub weight: u32,
    pub weight_configured: u32,
    /// Slow start under way: per cent of the target weight in effect (100 otherwise).
    pub throttle_pct: u32,
    /// Its `maxconn` (0: none).
    pub conn_limit: u64,
    /// Active checks: whether any, and their rise and fall.
    pub checked: bool,
    pub rise: u32,
    pub fall: u32,
    /// The last active check: "ok" or why it failed ("" before any).
    pub last_check: String,
    /// How long the last check took, and how long ago it ended (ms).
    pub check_duration_ms: u64,
    pub check_age_ms: u64,
    /// Checks in a row against the current health (rise or fall under way).
    pub check_progress: u32,
    /// Since the health last changed, and the total time down (ms).
    pub since_change_ms: u64,
    pub down_total_ms: u64,
    /// Seconds since it was last picked (`None`: never).
    pub last_pick_s: Option<u64>,
    /// Removed by a reload, still draining its connections.
    pub removed: bool,
    /// Connections open to it now.
    pub conn_cur: u64,
    pub base: ServerValues,
    /// 1xx..5xx, other.
    pub http_responses: [u64; 6],
    pub rates: Rates,
    pub latency: Option<Box<Latency>>,
}

impl std::ops::Deref for ServerStats {
    type Target = ServerValues;
    fn deref(&self) -> &ServerValues {
        &self.base
    }
}

impl ServerStats {
    /// Why it takes no traffic, in words (empty when it does).
    pub fn reason(&self) -> String {
        match self.status.as_str() {
            "drain" if self.removed => "removed by a reload: draining its connections".into(),
            "maint" => "maintenance (set by the operator)".into(),
            "drain" => "draining (set by the operator)".into(),
            "down" if self.ejected => "ejected: too many failures in live traffic".into(),
            "down" if self.health == "down" => match self.last_check.as_str() {
                "" => "down: no check passed yet".into(),
                why => format!("down: last check {why}"),
            },
            "down" if self.weight == 0 => "weight 0".into(),
            "down" => "down".into(),
            _ if self.fail_open => "failing open: every server is down".into(),
            _ => String::new(),
        }
    }
}

/// Everything, as one consistent-enough read (each counter is read once).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub global: GlobalStats,
    pub frontends: Vec<FrontendStats>,
    pub backends: Vec<BackendStats>,
}

impl Snapshot {
    pub fn frontend(&self, name: &str) -> Option<&FrontendStats> {
        self.frontends.iter().find(|f| f.name == name)
    }
    pub fn backend(&self, name: &str) -> Option<&BackendStats> {
        self.backends.iter().find(|b| b.name == name)
    }
}
