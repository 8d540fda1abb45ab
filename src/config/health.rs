//! Health checks and passive ejection, typed (validated in `validate_health.rs`,
//! run by `crate::health`).

use std::net::IpAddr;
use std::time::Duration;

/// Defaults, as HAProxy's where it has them.
pub mod defaults {
    use std::time::Duration;
    pub const INTERVAL: Duration = Duration::from_secs(2);
    pub const TIMEOUT: Duration = Duration::from_secs(1);
    pub const RISE: u32 = 2;
    pub const FALL: u32 = 3;
    pub const EJECT_BASE: Duration = Duration::from_secs(30);
    pub const EJECT_MAX: Duration = Duration::from_secs(300);
    /// Envoy's default; at least one server may always be ejected.
    pub const EJECT_MAX_PERCENT: u32 = 10;
    /// Most bytes of a check's reply read (status line, headers, body).
    pub const MAX_REPLY: usize = 16 * 1024;
}

/// One server's active check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    pub kind: CheckKind,
    pub interval: Duration,
    pub timeout: Duration,
    /// While rise or fall is under way.
    pub fastinter: Duration,
    /// While the server is down.
    pub downinter: Duration,
    /// Consecutive successes that bring a down server up.
    pub rise: u32,
    /// Consecutive failures that take an up server down.
    pub fall: u32,
    /// Check another port, or another address, than the server's.
    pub port: Option<u16>,
    pub address: Option<IpAddr>,
}

/// What a check does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckKind {
    /// The connect succeeds; `send` is written, then `expect` must be in the reply.
    Tcp {
        send: Option<String>,
        expect: Option<String>,
    },
    /// An HTTP/1.1 request with `Connection: close`; the status must be in one
    /// of the ranges and `expect_body` in the body.
    Http {
        method: String,
        path: String,
        host: Option<String>,
        headers: Vec<(String, String)>,
        expect_status: Vec<(u16, u16)>,
        expect_body: Option<String>,
    },
    /// A program: exit 0 healthy, 1 unhealthy (keepalived's MISC_CHECK); with
    /// `dynamic_weight`, 2..=255 healthy with weight `code - 2`.
    Script {
        command: Vec<String>,
        dynamic_weight: bool,
    },
    /// An ICMP echo request and its reply.
    Icmp,
}

impl CheckKind {
    pub fn name(&self) -> &'static str {
        match self {
            CheckKind::Tcp { .. } => "tcp",
            CheckKind::Http { .. } => "http",
            CheckKind::Script { .. } => "script",
            CheckKind::Icmp => "icmp",
        }
    }
}

/// Passive ejection (Envoy's outlier detection) from live traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Eject {
    pub consecutive_5xx: Option<u32>,
    pub consecutive_connect_failures: Option<u32>,
    /// The n-th ejection of a server lasts `base_time × n`, at most `max_time`.
    pub base_time: Duration,
    pub max_time: Duration,
    /// At most this share of a backend's servers ejected at once (at least one).
    pub max_percent: u32,
}

/// What a backend does when none of its servers is up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnAllDown {
    /// 503 at once (http), close at once (tcp): no connect attempt.
    #[default]
    Reject,
    /// Send traffic to every server anyway (a shared dependency failing every
    /// check must not take the whole service down); logged and counted.
    FailOpen,
}

/// A status list: `"200-399"`, `"200,204"`, `"2xx"`: inclusive ranges.
pub fn parse_status_list(s: &str) -> Option<Vec<(u16, u16)>> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim) {
        let range = if let Some(class) = part.strip_suffix("xx") {
            let c: u16 = class.parse().ok().filter(|c| (1..=5).contains(c))?;
            (c * 100, c * 100 + 99)
        } else if let Some((a, b)) = part.split_once('-') {
            (a.trim().parse().ok()?, b.trim().parse().ok()?)
        } else {
            let n = part.parse().ok()?;
            (n, n)
        };
        if !(100..=599).contains(&range.0) || !(100..=599).contains(&range.1) || range.0 > range.1 {
            return None;
        }
        out.push(range);
    }
    (!out.is_empty()).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lists() {
        assert_eq!(parse_status_list("200-399"), Some(vec![(200, 399)]));
        assert_eq!(
            parse_status_list("200, 204"),
            Some(vec![(200, 200), (204, 204)])
        );
        assert_eq!(
            parse_status_list("2xx,301"),
            Some(vec![(200, 299), (301, 301)])
        );
        for bad in ["", "abc", "399-200", "700", "2xx-3xx", "6xx", "200,"] {
            assert_eq!(parse_status_list(bad), None, "{bad}");
        }
    }
}
