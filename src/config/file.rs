//! The config file as written: raw serde structs mirroring the TOML.
//!
//! `deny_unknown_fields` everywhere so a typo is an error, and `Spanned` on every
//! name, reference and ranged number so `validate.rs` can point at the exact place.

use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::units::de_opt_duration;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    #[serde(default)]
    pub global: GlobalFile,
    #[serde(default)]
    pub stats: StatsFile,
    #[serde(default)]
    pub log: LogFile,
    #[serde(default)]
    pub admin: AdminFile,
    #[serde(default)]
    pub frontend: Vec<FrontendFile>,
    #[serde(default)]
    pub backend: Vec<BackendFile>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GlobalFile {
    pub threads: Option<Spanned<usize>>,
    pub threading: Option<Threading>,
    pub maxconn: Option<Spanned<u32>>,
    pub log_level: Option<Spanned<String>>,
    /// Replaced by `[log] access`; accepted with a warning.
    pub log_connections: Option<Spanned<bool>>,
    pub splice: Option<bool>,
    #[serde(default, deserialize_with = "de_opt_duration")]
    pub grace: Option<Duration>,
    #[serde(default, deserialize_with = "de_opt_duration")]
    pub idle_park_after: Option<Duration>,
}

/// `[stats]`: the web page, JSON, Prometheus and CSV.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatsFile {
    pub listen: Option<Spanned<String>>,
    pub auth: Option<Spanned<AuthFile>>,
    pub admin: Option<Spanned<bool>>,
    pub histograms: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthFile {
    pub user: Spanned<String>,
    pub password_file: Option<Spanned<String>>,
    pub password_env: Option<Spanned<String>>,
}

/// `[admin]`: the runtime admin socket.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminFile {
    pub socket: Option<Spanned<String>>,
    pub mode: Option<Spanned<String>>,
    pub group: Option<Spanned<String>>,
    pub read_only_socket: Option<Spanned<String>>,
    pub state_file: Option<Spanned<String>>,
}

/// `[log]`: the access log.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogFile {
    pub access: Option<Spanned<String>>,
    pub format: Option<Spanned<String>>,
    pub query: Option<bool>,
    pub request_id: Option<Spanned<String>>,
}

/// How worker threads are laid out (see README, "Threading model").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Threading {
    /// One single-threaded runtime per thread, each with its own SO_REUSEPORT listener.
    #[default]
    PerCore,
    /// One work-stealing runtime with `threads` workers sharing one listener.
    Shared,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Tcp,
    Http,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FrontendFile {
    pub name: Spanned<String>,
    pub listen: Spanned<Vec<Spanned<String>>>,
    pub mode: Option<Spanned<Mode>>,
    pub maxconn: Option<Spanned<u32>>,
    pub backlog: Option<Spanned<u32>>,
    /// TCP_DEFER_ACCEPT: the kernel hands over a connection once its first
    /// bytes arrived (default: on in http mode, off in tcp mode).
    pub defer_accept: Option<bool>,
    #[serde(default)]
    pub timeouts: FrontendTimeoutsFile,
    pub default_backend: Spanned<String>,
    #[serde(default)]
    pub accept_proxy: bool,
    /// http: add X-Forwarded-For and X-Forwarded-Proto (default true).
    pub x_forwarded: Option<bool>,
    /// http: add an RFC 7239 Forwarded field (default false).
    pub forwarded: Option<bool>,
    /// http: largest request head in bytes (default 16384).
    pub max_head_size: Option<Spanned<u32>>,
    /// http: most header fields in a request (default 100).
    pub max_headers: Option<Spanned<u32>>,
    /// http: status -> file whose contents replace fulcrum's own error body.
    #[serde(default)]
    pub error_files: std::collections::BTreeMap<String, Spanned<String>>,
    /// http: named conditions on the request (`acl.api = { path_prefix = "/api/" }`).
    #[serde(default)]
    pub acl: std::collections::BTreeMap<String, Spanned<AclFile>>,
    /// http: ordered routing and rewriting rules.
    #[serde(default)]
    pub rules: Vec<Spanned<RuleFile>>,
    /// http: "forward" (default), "match-only" or "off".
    pub path_normalize: Option<Spanned<String>>,
    /// http: how the normaliser treats each class of path bytes.
    pub path_options: Option<Spanned<PathOptionsFile>>,
    /// Per-source connection and request limits.
    pub limits: Option<Spanned<LimitsFile>>,
    /// A condition (ACL names) that exempts a source from `limits`.
    pub limits_unless: Option<Spanned<String>>,
    /// Terminate TLS on every address of this frontend. Not `Spanned`: toml
    /// cannot place a table made implicitly by `[[frontend.tls.certs]]`.
    pub tls: Option<TlsFile>,
}

/// `tls = { certs = [{ cert = "site.pem", key = "site.key" }], ... }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFile {
    pub certs: Spanned<Vec<Spanned<CertFile>>>,
    /// The `cert` path served without SNI or for an unknown name (default:
    /// the first), or "none" to refuse those handshakes.
    pub default_cert: Option<Spanned<String>>,
    /// "1.2" (default) or "1.3".
    pub min_version: Option<Spanned<String>>,
    /// Protocols offered by ALPN (default `["http/1.1"]` in http mode, none in tcp).
    pub alpn: Option<Spanned<Vec<String>>>,
    #[serde(default, deserialize_with = "de_opt_duration")]
    pub handshake_timeout: Option<Duration>,
    /// PEM CA certificates that client certificates must chain to (mTLS).
    pub client_ca: Option<Spanned<String>>,
    /// "required" (default with client_ca) or "optional".
    pub client_auth: Option<Spanned<String>>,
}

/// `tls = { verify = "ca", ca = "ca.pem", sni = "app.internal" }` on a backend.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTlsFile {
    /// "ca" (with `ca`), "system" (default) or "none".
    pub verify: Option<Spanned<String>>,
    pub ca: Option<Spanned<String>>,
    pub sni: Option<Spanned<String>>,
    pub client_cert: Option<Spanned<String>>,
    pub client_key: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertFile {
    pub cert: Spanned<String>,
    pub key: Spanned<String>,
}

/// `limits = { conn_per_source = 20, conn_rate_per_source = "10/s", ... }`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsFile {
    pub conn_per_source: Option<Spanned<u32>>,
    /// "N/s" or "N/m".
    pub conn_rate_per_source: Option<Spanned<String>>,
    /// http: "N/s" or "N/m".
    pub req_rate_per_source: Option<Spanned<String>>,
    /// Most sources remembered (default 100000).
    pub table_size: Option<Spanned<u32>>,
    /// A source not seen for this long is forgotten (default 60s).
    #[serde(default, deserialize_with = "de_opt_duration")]
    pub expire: Option<Duration>,
}

/// `path_options = { merge_slashes = true, encoded_slash = "reject", ... }`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PathOptionsFile {
    pub merge_slashes: Option<bool>,
    /// "reject" (default), "keep" or "decode".
    pub encoded_slash: Option<Spanned<String>>,
    /// "reject" (default), "keep" or "slash".
    pub backslash: Option<Spanned<String>>,
    /// "reject" (default) or "keep".
    pub encoded_control: Option<Spanned<String>>,
    /// "reject" (default) or "keep".
    pub invalid_escape: Option<Spanned<String>>,
    /// "reject" (default) or "keep".
    pub path_params: Option<Spanned<String>>,
}

/// One ACL: exactly one fetch key (`path_prefix`, `header`, `src`, ...), plus an
/// operator for the fetches that take one (`equals`, `prefix`, `regex`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AclFile {
    pub path: Option<List<String>>,
    pub path_prefix: Option<List<String>>,
    pub path_suffix: Option<List<String>>,
    pub path_regex: Option<String>,
    pub host: Option<List<String>>,
    pub host_suffix: Option<List<String>>,
    pub host_regex: Option<String>,
    pub method: Option<List<String>>,
    pub header: Option<String>,
    pub query: Option<String>,
    pub cookie: Option<String>,
    pub src: Option<List<String>>,
    pub dst_port: Option<List<u16>>,
    /// The TLS server name the client asked for (SNI).
    pub sni: Option<List<String>>,
    pub sni_suffix: Option<List<String>>,
    /// The connection is TLS (`true`) or plain (`false`).
    pub tls: Option<bool>,
    /// A client certificate was verified (mTLS).
    pub tls_client_verified: Option<bool>,
    /// header/query/cookie: the value equals one of these.
    pub equals: Option<List<String>>,
    /// header: the value starts with this.
    pub prefix: Option<String>,
    /// header: the value matches this regular expression.
    pub regex: Option<String>,
    /// path matchers: compare without regard to case.
    #[serde(default)]
    pub ignore_case: bool,
}

/// One rule: exactly one action key, and an optional `if` / `unless` condition.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleFile {
    #[serde(rename = "if")]
    pub if_: Option<Spanned<String>>,
    pub unless: Option<Spanned<String>>,
    pub deny: Option<Spanned<u16>>,
    /// deny: the response body (default: the error file for the status, or a short text).
    pub body: Option<String>,
    pub redirect: Option<Spanned<RedirectFile>>,
    pub use_backend: Option<Spanned<String>>,
    pub split: Option<Spanned<Vec<SplitFile>>>,
    /// split: `"cookie:NAME"` or `"src"`: the same user always gets the same side.
    pub sticky: Option<Spanned<String>>,
    pub set_header: Option<Spanned<String>>,
    pub add_header: Option<Spanned<String>>,
    pub del_header: Option<Spanned<String>>,
    pub set_response_header: Option<Spanned<String>>,
    pub add_response_header: Option<Spanned<String>>,
    pub del_response_header: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedirectFile {
    /// Redirect to exactly this URL.
    pub location: Option<String>,
    /// Redirect to this prefix followed by the request's path (and query).
    pub prefix: Option<String>,
    /// Redirect to the same host and path under this scheme ("https").
    pub scheme: Option<String>,
    pub status: Option<Spanned<u16>>,
    /// prefix/scheme: leave the query string out.
    #[serde(default)]
    pub drop_query: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SplitFile {
    pub backend: Spanned<String>,
    pub weight: Spanned<u32>,
}

/// `persist = { cookie = "SRV" }` or `persist = { source = true, expire = "30m" }`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PersistFile {
    pub cookie: Option<Spanned<String>>,
    /// cookie: "insert" (default) or "prefix".
    pub mode: Option<Spanned<String>>,
    /// cookie insert: do not forward the persistence cookie to the server.
    #[serde(default)]
    pub indirect: bool,
    /// cookie insert: mark responses carrying the new cookie `cache-control: private`.
    #[serde(default)]
    pub nocache: bool,
    /// cookie insert: attributes of the cookie fulcrum sets.
    #[serde(default)]
    pub secure: bool,
    #[serde(default)]
    pub httponly: bool,
    /// "strict", "lax" or "none".
    pub samesite: Option<Spanned<String>>,
    pub domain: Option<Spanned<String>>,
    #[serde(default, deserialize_with = "de_opt_duration")]
    pub max_age: Option<Duration>,
    #[serde(default)]
    pub source: bool,
    #[serde(default, deserialize_with = "de_opt_duration")]
    pub expire: Option<Duration>,
    /// source: most addresses remembered.
    pub size: Option<Spanned<u32>>,
}

/// A value or a list of values: `path = "/a"` or `path = ["/a", "/b"]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct List<T>(pub Vec<T>);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for List<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::IntoDeserializer;
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for V<T> {
            type Value = List<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a value or a list of values")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<List<T>, E> {
                T::deserialize(v.into_deserializer()).map(|t| List(vec![t]))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<List<T>, E> {
                T::deserialize(v.into_deserializer()).map(|t| List(vec![t]))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, seq: A) -> Result<List<T>, A::Error> {
                Vec::<T>::deserialize(serde::de::value::SeqAccessDeserializer::new(seq)).map(List)
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FrontendTimeoutsFile {
    #[serde(default, deserialize_with = "de_opt_duration")]
    pub client: Option<Duration>,
    #[serde(default, deserialize_with = "de_opt_duration")]
    pub http_request: Option<Duration>,
    #[serde(default, deserialize_with = "de_opt_duration")]
    pub http_keepalive: Option<Duration>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendFile {
    pub name: Spanned<String>,
    pub balance: Option<Spanned<BalanceFile>>,
    #[serde(default)]
    pub timeouts: BackendTimeoutsFile,
    pub retries: Option<u32>,
    /// http: idle keep-alive connections kept per server and worker thread.
    pub pool_max_idle: Option<u32>,
    /// "tcp" or "http": checked against every frontend that uses this backend.
    pub mode: Option<Spanned<Mode>>,
    pub persist: Option<Spanned<PersistFile>>,
    /// Active health checks of every server (a server may override or turn off).
    pub health: Option<Spanned<HealthFile>>,
    /// A server coming back up ramps its weight over this long.
    #[serde(default, deserialize_with = "de_opt_duration")]
    pub slowstart: Option<Duration>,
    /// A server a reload removes keeps its connections this long at most.
    #[serde(default, deserialize_with = "de_opt_duration")]
    pub drain_timeout: Option<Duration>,
    /// Passive ejection from live traffic.
    pub eject: Option<Spanned<EjectFile>>,
    /// TLS to every server of this backend.
    pub tls: Option<UpstreamTlsFile>,
    /// "reject" (default) or "fail_open".
    pub on_all_down: Option<Spanned<String>>,
    pub servers: Spanned<Vec<ServerFile>>,
}

/// `health = { check = "http", path = "/healthz", ... }`.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthFile {
    /// "tcp", "http", "script" or "icmp".
    pub check: Option<String>,
    #[serde(default, deserialize_with = "de_opt_duration")]
    pub interval: Option<Duration>,
    #[serde(default, deserialize_with = "de_opt_duration")]
    pub timeout: Option<Duration>,
    /// While a state is changing (rise or fall under way).
    #[serde(default, deserialize_with = "de_opt_duration")]
    pub fastinter: Option<Duration>,
    /// While the server is down.
    #[serde(default, deserialize_with = "de_opt_duration")]
    pub downinter: Option<Duration>,
    pub rise: Option<u32>,
    pub fall: Option<u32>,
    /// Check this port instead of the server's.
    pub port: Option<u16>,
    /// Check this address instead of the server's.
    pub address: Option<String>,
    /// tcp: sent after connecting.
    pub send: Option<String>,
    /// tcp: a substring the reply must hold.
    pub expect: Option<String>,
    /// http (GET by default).
    pub method: Option<String>,
    /// http ("/" by default).
    pub path: Option<String>,
    /// http: the Host (default: the check's address).
    pub host: Option<String>,
    /// http: extra header lines, "Name: value".
    pub headers: Option<Vec<String>>,
    /// http: "200-399" (default), "200,204", 200, or a list of those.
    pub expect_status: Option<toml::Value>,
    /// http: a substring the body must hold.
    pub expect_body: Option<String>,
    /// script: the program and its arguments.
    pub command: Option<Vec<String>>,
    /// script: exit codes 2..=255 mean healthy with weight `code - 2`.
    pub dynamic_weight: Option<bool>,
}

/// `eject = { consecutive_5xx = 5, consecutive_connect_failures = 3, ... }`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EjectFile {
    pub consecutive_5xx: Option<Spanned<u32>>,
    pub consecutive_connect_failures: Option<Spanned<u32>>,
    #[serde(default, deserialize_with = "de_opt_duration")]
    pub base_time: Option<Duration>,
    #[serde(default, deserialize_with = "de_opt_duration")]
    pub max_time: Option<Duration>,
    pub max_percent: Option<Spanned<u32>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendTimeoutsFile {
    #[serde(default, deserialize_with = "de_opt_duration")]
    pub connect: Option<Duration>,
    #[serde(default, deserialize_with = "de_opt_duration")]
    pub server: Option<Duration>,
    #[serde(default, deserialize_with = "de_opt_duration")]
    pub queue: Option<Duration>,
    #[serde(default, deserialize_with = "de_opt_duration")]
    pub pool_idle: Option<Duration>,
}

/// `balance = "rr"` or `balance = { algorithm = "rr", ... }`.
#[derive(Debug)]
pub enum BalanceFile {
    Name(String),
    Table(BalanceTable),
}

impl<'de> Deserialize<'de> for BalanceFile {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = BalanceFile;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an algorithm name like \"rr\", or a table like { algorithm = \"rr\" }")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<BalanceFile, E> {
                Ok(BalanceFile::Name(v.to_string()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<BalanceFile, A::Error> {
                BalanceTable::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(BalanceFile::Table)
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BalanceTable {
    pub algorithm: String,
    /// url_param: the query parameter whose value is hashed.
    pub param: Option<String>,
    /// sh: hash the /24 (IPv4) or /64 (IPv6) prefix instead of the address.
    pub prefix: Option<bool>,
    /// uri: include the query string.
    pub whole: Option<bool>,
    /// uri: hash only the first N path segments.
    pub depth: Option<u16>,
    /// uri: hash only the first N characters.
    pub len: Option<u16>,
    /// Hash algorithms: bounded loads (no server above factor × average in-flight).
    pub hash_balance_factor: Option<f64>,
    /// lblc/lblcr: idle time after which a destination's entry is forgotten.
    #[serde(default, deserialize_with = "de_opt_duration")]
    pub expire: Option<Duration>,
    /// lblcr: a server set unchanged this long sheds its most loaded member.
    #[serde(default, deserialize_with = "de_opt_duration")]
    pub shrink: Option<Duration>,
    /// p2c_ewma: time constant of the response-time average.
    #[serde(default, deserialize_with = "de_opt_duration")]
    pub decay: Option<Duration>,
}

impl BalanceFile {
    pub fn algorithm(&self) -> &str {
        match self {
            BalanceFile::Name(n) => n,
            BalanceFile::Table(t) => &t.algorithm,
        }
    }

    pub fn table(&self) -> Option<&BalanceTable> {
        match self {
            BalanceFile::Name(_) => None,
            BalanceFile::Table(t) => Some(t),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerFile {
    pub name: Spanned<String>,
    pub address: Spanned<String>,
    pub weight: Option<Spanned<u32>>,
    pub maxconn: Option<Spanned<u32>>,
    #[serde(default)]
    pub backup: bool,
    pub send_proxy: Option<ProxyVersion>,
    /// Cookie persistence: the value naming this server (default: its name).
    pub cookie: Option<Spanned<String>>,
    /// `false` (never checked) or a table overriding the backend's `health`.
    pub health: Option<Spanned<toml::Value>>,
    /// `false` (plain even if the backend uses TLS), `true` (the backend's
    /// settings, or verified against the system's roots) or its own table
    /// (the keys of a backend's `tls`).
    pub tls: Option<Spanned<toml::Value>>,
}

/// A server's own `tls` table (read from its `toml::Value`, so without
/// positions of its own: errors point at the table).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerTlsTable {
    pub verify: Option<String>,
    pub ca: Option<String>,
    pub sni: Option<String>,
    pub client_cert: Option<String>,
    pub client_key: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProxyVersion {
    V1,
    V2,
}
