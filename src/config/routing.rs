//! Layer-7 routing, typed: named ACLs, conditions, ordered rules and backend
//! persistence. `validate.rs` builds these from the file; `rules::acl`, `rules`
//! and `l7::persist` evaluate them. Regular expressions are compiled here, once.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use regex::Regex;

/// A named request matcher.
#[derive(Debug, Clone)]
pub struct Acl {
    pub name: String,
    pub matcher: Matcher,
}

/// What is done to the forwarded request (`path_normalize`; see `l7::path`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PathMode {
    /// Routing and the origin see the normalised path (default).
    #[default]
    Forward,
    /// Routing sees the normalised path; the origin gets the client's bytes.
    MatchOnly,
    /// No normalisation at all (`check` warns: path ACLs can be walked around).
    Off,
}

/// What happens to one class of path bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Treat {
    /// 400, `bad_path`.
    #[default]
    Reject,
    /// Left as it is (an escape stays escaped, a byte stays itself).
    Keep,
    /// `%2F` decoded to `/`; a backslash (raw or `%5C`) read as `/`.
    Slash,
}

/// The per-frontend choices (`path_options`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PathOptions {
    pub mode: PathMode,
    pub merge_slashes: bool,
    /// `%2F`: Reject, Keep (escaped, not a separator) or Slash.
    pub encoded_slash: Treat,
    /// `\` and `%5C`: Reject, Keep or Slash.
    pub backslash: Treat,
    /// `%00`–`%1F`, `%7F`: Reject or Keep.
    pub encoded_control: Treat,
    /// `%` not followed by two hex digits: Reject or Keep.
    pub invalid_escape: Treat,
    /// `;` in the path: Reject or Keep.
    pub path_params: Treat,
}

impl Default for PathOptions {
    fn default() -> Self {
        PathOptions {
            mode: PathMode::Forward,
            merge_slashes: true,
            encoded_slash: Treat::Reject,
            backslash: Treat::Reject,
            encoded_control: Treat::Reject,
            invalid_escape: Treat::Reject,
            path_params: Treat::Reject,
        }
    }
}

/// A rate: `count` per `per` (token bucket: a burst of `count`, refilled
/// evenly over `per`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub count: u32,
    pub per: Duration,
}

impl Rate {
    /// `"N/s"`, `"N/m"` (`N` ≥ 1).
    pub fn parse(s: &str) -> Option<Rate> {
        let (n, unit) = s.trim().split_once('/')?;
        let count: u32 = n.trim().parse().ok().filter(|n| *n > 0)?;
        let per = match unit.trim() {
            "s" | "sec" | "second" => Duration::from_secs(1),
            "m" | "min" | "minute" => Duration::from_secs(60),
            _ => return None,
        };
        Some(Rate { count, per })
    }
}

/// Per-source limits of a frontend (`limits`, `limits_unless`).
#[derive(Debug, Clone)]
pub struct SourceLimits {
    pub conn_per_source: Option<u32>,
    pub conn_rate: Option<Rate>,
    pub req_rate: Option<Rate>,
    pub table_size: u32,
    pub expire: Duration,
    /// Sources for which this holds are never limited.
    pub unless: Option<Condition>,
}

/// Paths an ACL compares the (normalised) request path with. Paths are
/// case-sensitive unless the ACL says `ignore_case = true`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PathValues {
    pub list: Vec<String>,
    pub nocase: bool,
}

impl From<Vec<String>> for PathValues {
    fn from(list: Vec<String>) -> Self {
        PathValues {
            list,
            nocase: false,
        }
    }
}

impl PathValues {
    fn eq(&self, a: &[u8], b: &[u8]) -> bool {
        if self.nocase {
            a.eq_ignore_ascii_case(b)
        } else {
            a == b
        }
    }

    pub fn any_equal(&self, path: &str) -> bool {
        self.list
            .iter()
            .any(|v| self.eq(path.as_bytes(), v.as_bytes()))
    }

    pub fn any_prefix(&self, path: &str) -> bool {
        self.list
            .iter()
            .any(|v| path.len() >= v.len() && self.eq(&path.as_bytes()[..v.len()], v.as_bytes()))
    }

    pub fn any_suffix(&self, path: &str) -> bool {
        self.list.iter().any(|v| {
            path.len() >= v.len() && self.eq(&path.as_bytes()[path.len() - v.len()..], v.as_bytes())
        })
    }
}

/// What an ACL looks at, and how. Hosts are stored lower-case without a port.
#[derive(Debug, Clone)]
pub enum Matcher {
    Path(PathValues),
    PathPrefix(PathValues),
    PathSuffix(PathValues),
    /// Compiled case-insensitive with `ignore_case = true`.
    PathRegex(Regex),
    Host(Vec<String>),
    HostSuffix(Vec<String>),
    /// Compiled case-insensitive, matched against the host without its port.
    HostRegex(Regex),
    Method(Vec<String>),
    Header {
        name: String,
        test: ValueTest,
    },
    Query {
        name: String,
        test: ValueTest,
    },
    Cookie {
        name: String,
        test: ValueTest,
    },
    Src(Vec<Cidr>),
    DstPort(Vec<u16>),
    /// The TLS client asked for one of these names (SNI), case-insensitive.
    Sni(Vec<String>),
    /// ... for one of these domains or a name under one.
    SniSuffix(Vec<String>),
    /// The connection is (`true`) or is not TLS.
    Tls(bool),
    /// A client certificate was verified (mTLS), or not.
    TlsClientVerified(bool),
}

/// The test applied to a header, query parameter or cookie value.
#[derive(Debug, Clone)]
pub enum ValueTest {
    Present,
    Equals(Vec<String>),
    Prefix(String),
    Regex(Regex),
}

/// An address block: `10.0.0.0/8`, `2001:db8::/32`, or one address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub net: IpAddr,
    pub bits: u8,
}

impl Cidr {
    pub fn parse(s: &str) -> Option<Cidr> {
        let (addr, bits) = match s.split_once('/') {
            Some((a, b)) => (a.parse::<IpAddr>().ok()?, Some(b.parse::<u8>().ok()?)),
            None => (s.parse::<IpAddr>().ok()?, None),
        };
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let bits = bits.unwrap_or(max);
        if bits > max {
            return None;
        }
        Some(Cidr {
            net: mask(addr, bits),
            bits,
        })
    }

    /// IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`) match IPv4 blocks.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        ip.is_ipv4() == self.net.is_ipv4() && mask(ip, self.bits) == self.net
    }
}

fn mask(ip: IpAddr, bits: u8) -> IpAddr {
    match ip {
        IpAddr::V4(a) => {
            let m = u32::MAX.checked_shl(32 - u32::from(bits)).unwrap_or(0);
            IpAddr::V4((u32::from(a) & m).into())
        }
        IpAddr::V6(a) => {
            let m = u128::MAX.checked_shl(128 - u32::from(bits)).unwrap_or(0);
            IpAddr::V6((u128::from(a) & m).into())
        }
    }
}

/// `a b || !c`: OR of AND-groups of (possibly negated) ACLs, HAProxy's grammar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    pub any: Vec<Vec<Term>>,
    /// `unless` instead of `if`.
    pub negate: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Term {
    /// Index into the frontend's `acls`.
    pub acl: usize,
    pub not: bool,
}

/// Why a condition string is wrong: the message and the byte offset in the string.
#[derive(Debug, PartialEq, Eq)]
pub struct CondError {
    pub at: usize,
    pub message: String,
}

impl Condition {
    /// Whether the condition holds for a connection from `src` to `dst_port`,
    /// before any request: only `src` and `dst_port` ACLs can match (the
    /// config allows no others where this is used, `limits_unless`).
    pub fn holds_for_connection(&self, acls: &[Acl], src: IpAddr, dst_port: u16) -> bool {
        let acl = |i: usize| match acls.get(i).map(|a| &a.matcher) {
            Some(Matcher::Src(blocks)) => blocks.iter().any(|b| b.contains(src)),
            Some(Matcher::DstPort(ports)) => ports.contains(&dst_port),
            _ => false,
        };
        let hit = self
            .any
            .iter()
            .any(|group| group.iter().all(|t| acl(t.acl) != t.not));
        hit != self.negate
    }

    /// Parse `text` against the ACL names; unknown names are errors.
    pub fn parse(text: &str, acls: &[Acl], negate: bool) -> Result<Condition, CondError> {
        let mut any = vec![Vec::new()];
        let mut pos = 0;
        for word in text.split([' ', '\t']) {
            let at = pos;
            pos += word.len() + 1;
            if word.is_empty() {
                continue;
            }
            if word == "||" || word == "or" {
                if any.last().is_some_and(Vec::is_empty) {
                    return Err(CondError {
                        at,
                        message: format!("\"{word}\" needs an ACL name on each side"),
                    });
                }
                any.push(Vec::new());
                continue;
            }
            let (not, name) = match word.strip_prefix('!') {
                Some(n) => (true, n),
                None => (false, word),
            };
            let Some(acl) = acls.iter().position(|a| a.name == name) else {
                let hint = super::error::nearest(name, acls.iter().map(|a| a.name.as_str()))
                    .map(|h| format!(" (did you mean \"{h}\"?)"))
                    .unwrap_or_default();
                return Err(CondError {
                    at: at + usize::from(not),
                    message: format!("unknown ACL \"{name}\"{hint}"),
                });
            };
            if let Some(group) = any.last_mut() {
                group.push(Term { acl, not });
            }
        }
        if any.iter().any(Vec::is_empty) {
            return Err(CondError {
                at: text.len(),
                message: if any.len() == 1 {
                    "empty condition".to_string()
                } else {
                    "\"||\" needs an ACL name on each side".to_string()
                },
            });
        }
        Ok(Condition { any, negate })
    }
}

/// Rules one frontend may have (the rule walk remembers matches in a 128-bit set).
pub const MAX_RULES: usize = 128;

/// One ordered rule.
#[derive(Debug, Clone)]
pub struct Rule {
    pub cond: Option<Condition>,
    pub action: Action,
}

#[derive(Debug, Clone)]
pub enum Action {
    /// Answer with this status (and body) instead of forwarding.
    /// Without a body, the frontend's error file for the status or a short text.
    Deny {
        status: u16,
        body: Option<Arc<[u8]>>,
    },
    Redirect {
        status: u16,
        to: RedirectTo,
    },
    /// Index into `Config::backends`.
    UseBackend(usize),
    Split {
        /// (backend index, weight), weights > 0.
        targets: Vec<(usize, u32)>,
        sticky: Option<Sticky>,
    },
    RequestHeader(HeaderOp),
    ResponseHeader(HeaderOp),
}

impl Action {
    /// Routing actions end the rule walk; header actions accumulate.
    pub fn routes(&self) -> bool {
        !matches!(self, Action::RequestHeader(_) | Action::ResponseHeader(_))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedirectTo {
    /// Exactly this URL.
    Location(String),
    /// This prefix, then the request's path (and query unless dropped).
    Prefix { prefix: String, drop_query: bool },
    /// `scheme://host` then the request's path (and query unless dropped).
    Scheme { scheme: String, drop_query: bool },
}

/// A header edit; names are stored lower-case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderOp {
    /// Remove every field with this name, then add one.
    Set(String, String),
    Add(String, String),
    Del(String),
}

impl HeaderOp {
    pub fn name(&self) -> &str {
        match self {
            HeaderOp::Set(n, _) | HeaderOp::Add(n, _) | HeaderOp::Del(n) => n,
        }
    }
}

/// What keeps one user on one side of a split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sticky {
    Cookie(String),
    Src,
}

/// Per-backend persistence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Persist {
    Cookie {
        name: String,
        mode: CookieMode,
        indirect: bool,
        nocache: bool,
        /// insert: what follows `NAME=VALUE` in the Set-Cookie fulcrum writes
        /// (`; Path=/` and the configured attributes), built once.
        attrs: String,
    },
    Source {
        expire: Duration,
        size: u32,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CookieMode {
    /// fulcrum sets `NAME=<server>` on the first response.
    Insert,
    /// The application's cookie `NAME` is prefixed with `<server>~`.
    Prefix,
}

/// An RFC 9110 token (header names, cookie names).
pub fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// A header value fulcrum may write: visible ASCII, spaces and tabs, no CR/LF/NUL.
pub fn is_field_value(s: &str) -> bool {
    s.bytes().all(|b| b == b'\t' || (b' '..=b'~').contains(&b))
}

/// `example.com:8080` → `example.com`; `[::1]:80` → `[::1]`.
pub fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.find(']').map_or(host, |i| &host[..=i]);
    }
    match host.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') && p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acls(names: &[&str]) -> Vec<Acl> {
        names
            .iter()
            .map(|n| Acl {
                name: n.to_string(),
                matcher: Matcher::DstPort(vec![1]),
            })
            .collect()
    }

    #[test]
    fn conditions_parse_haproxy_grammar() {
        let a = acls(&["api", "beta", "internal"]);
        let c = Condition::parse("!internal api || beta", &a, false).unwrap();
        assert_eq!(
            c.any,
            vec![
                vec![Term { acl: 2, not: true }, Term { acl: 0, not: false }],
                vec![Term { acl: 1, not: false }],
            ]
        );
        assert_eq!(
            Condition::parse("api or  beta", &a, true)
                .unwrap()
                .any
                .len(),
            2
        );
        let e = Condition::parse("api || bta", &a, false).unwrap_err();
        assert_eq!(e.at, 7);
        assert!(e.message.contains("did you mean \"beta\""), "{}", e.message);
        assert_eq!(Condition::parse("!nope", &a, false).unwrap_err().at, 1);
        assert!(Condition::parse("", &a, false).is_err());
        assert!(Condition::parse("api ||", &a, false).is_err());
        assert!(Condition::parse("|| api", &a, false).is_err());
    }

    #[test]
    fn cidr_blocks() {
        let c = Cidr::parse("10.1.0.0/16").unwrap();
        assert!(c.contains("10.1.200.3".parse().unwrap()));
        assert!(!c.contains("10.2.0.1".parse().unwrap()));
        assert!(c.contains("::ffff:10.1.0.9".parse().unwrap()));
        let v6 = Cidr::parse("2001:db8::/32").unwrap();
        assert!(v6.contains("2001:db8:1::5".parse().unwrap()));
        assert!(!v6.contains("2001:db9::5".parse().unwrap()));
        assert!(!v6.contains("10.1.0.1".parse().unwrap()));
        assert!(
            Cidr::parse("0.0.0.0/0")
                .unwrap()
                .contains("1.2.3.4".parse().unwrap())
        );
        assert_eq!(Cidr::parse("127.0.0.1").unwrap().bits, 32);
        assert!(Cidr::parse("10.0.0.0/33").is_none());
        assert!(Cidr::parse("nope/8").is_none());
    }

    #[test]
    fn tokens_and_values() {
        assert!(is_token("X-Env"));
        assert!(!is_token("X Env"));
        assert!(!is_token(""));
        assert!(is_field_value("a b\tc"));
        assert!(!is_field_value("a\r\nb"));
        assert_eq!(strip_port("Example.com:8080"), "Example.com");
        assert_eq!(strip_port("[::1]:80"), "[::1]");
        assert_eq!(strip_port("a.b"), "a.b");
    }
}
