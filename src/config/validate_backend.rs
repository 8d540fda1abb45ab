//! Validation of `[[backend]]` tables: timeouts, the balancing algorithm and
//! its table, persistence, health and TLS settings, and each server.

use std::collections::HashMap;
use std::net::{SocketAddr, ToSocketAddrs};

use toml::Spanned;

use super::error::nearest;
use super::file::{BackendFile, BalanceFile, BalanceTable, ServerFile};
use super::validate::Validator;
use super::{Algorithm, Backend, BackendTimeouts, ServerConfig, UriKey, defaults};

impl Validator<'_> {
    pub(super) fn backend(&mut self, b: &BackendFile) -> Backend {
        let name = b.name.get_ref().clone();
        let ctx = format!("backend \"{name}\"");
        if name.is_empty() {
            self.err(&b.name, "backend name must not be empty");
        }
        let algorithm = match &b.balance {
            None => Algorithm::Rr,
            Some(bal) => self.algorithm(&ctx, bal),
        };
        if b.servers.get_ref().is_empty() {
            self.err(
                &b.servers,
                format!("{ctx}: servers must list at least one server"),
            );
        }
        let mut servers = Vec::new();
        let base_health = self.backend_health(&ctx, b.health.as_ref());
        let backend_tls = b
            .tls
            .as_ref()
            .and_then(|t| self.upstream_tls(&ctx, t, &b.name));
        let mut seen: HashMap<&str, ()> = HashMap::new();
        for s in b.servers.get_ref() {
            if seen.insert(s.name.get_ref(), ()).is_some() {
                self.err(
                    &s.name,
                    format!("{ctx}: duplicate server name \"{}\"", s.name.get_ref()),
                );
            }
            if let Some(mut sc) = self.server(&ctx, s) {
                sc.health = self.server_health(&ctx, b.health.as_ref(), base_health.as_ref(), s);
                sc.tls = match &s.tls {
                    None => backend_tls.clone(),
                    Some(v) => self.server_tls(&ctx, v, s, backend_tls.as_ref()),
                };
                if servers.iter().any(|o: &ServerConfig| o.cookie == sc.cookie)
                    && let Some(c) = &s.cookie
                {
                    self.err(
                        c,
                        format!("{ctx}: cookie value \"{}\" names two servers", sc.cookie),
                    );
                }
                servers.push(sc);
            }
        }
        let persist = b.persist.as_ref().and_then(|p| self.persist(&ctx, p));
        if matches!(persist, Some(super::routing::Persist::Cookie { .. })) {
            let safe = |v: &str| {
                v.bytes()
                    .all(|c| c.is_ascii_alphanumeric() || b"-_.".contains(&c))
            };
            for s in b.servers.get_ref() {
                if s.cookie.is_none() && !safe(s.name.get_ref()) {
                    self.err(&s.name, format!("{ctx}: server \"{}\" needs cookie = \"VALUE\" (letters, digits, '-', '_', '.'): its name cannot be a cookie value", s.name.get_ref()));
                }
            }
        }
        Backend {
            name,
            algorithm,
            timeouts: BackendTimeouts {
                connect: b.timeouts.connect.unwrap_or(defaults::CONNECT_TIMEOUT),
                server: b.timeouts.server.unwrap_or(defaults::SERVER_TIMEOUT),
                queue: b.timeouts.queue.unwrap_or(defaults::QUEUE_TIMEOUT),
                pool_idle: b.timeouts.pool_idle.unwrap_or(defaults::POOL_IDLE),
            },
            retries: b.retries.unwrap_or(defaults::RETRIES),
            pool_max_idle: b.pool_max_idle.unwrap_or(defaults::POOL_MAX_IDLE),
            mode: b.mode.as_ref().map(|m| *m.get_ref()),
            persist,
            slowstart: b.slowstart.filter(|d| !d.is_zero()),
            drain_timeout: b.drain_timeout.unwrap_or(defaults::DRAIN_TIMEOUT),
            tls: backend_tls,
            eject: b.eject.as_ref().and_then(|e| self.eject(&ctx, e)),
            on_all_down: self.on_all_down(&ctx, b.on_all_down.as_ref()),
            servers,
        }
    }

    fn algorithm(&mut self, ctx: &str, bal: &Spanned<BalanceFile>) -> Algorithm {
        let name = bal.get_ref().algorithm();
        let empty = BalanceTable::default();
        let t = bal.get_ref().table().unwrap_or(&empty);
        // Which options each algorithm takes; anything else is an error.
        let allowed: &[&str] = match name {
            "sh" => &["prefix", "hash_balance_factor"],
            "dh" => &["hash_balance_factor"],
            "uri" => &["whole", "depth", "len", "hash_balance_factor"],
            "url_param" => &["param", "hash_balance_factor"],
            "lblc" => &["expire"],
            "lblcr" => &["expire", "shrink"],
            "p2c_ewma" => &["decay"],
            _ => &[],
        };
        let given = [
            ("param", t.param.is_some()),
            ("prefix", t.prefix.is_some()),
            ("whole", t.whole.is_some()),
            ("depth", t.depth.is_some()),
            ("len", t.len.is_some()),
            ("hash_balance_factor", t.hash_balance_factor.is_some()),
            ("expire", t.expire.is_some()),
            ("shrink", t.shrink.is_some()),
            ("decay", t.decay.is_some()),
        ];
        for (opt, set) in given {
            if set && !allowed.contains(&opt) {
                self.err(
                    bal,
                    format!(
                        "{ctx}: option \"{opt}\" does not apply to balance algorithm \"{name}\""
                    ),
                );
            }
        }
        let factor = t.hash_balance_factor;
        if let Some(f) = factor
            && !(1.0..=100.0).contains(&f)
        {
            self.err(
                bal,
                format!("{ctx}: hash_balance_factor must be between 1.0 and 100 (1.25 is usual)"),
            );
        }
        match name {
            "rr" | "roundrobin" => Algorithm::Rr,
            "wrr" => Algorithm::Wrr,
            "lc" => Algorithm::Lc,
            "wlc" | "leastconn" => Algorithm::Wlc,
            "random" => Algorithm::Random,
            "p2c" => Algorithm::P2c,
            "p2c_ewma" => Algorithm::P2cEwma {
                decay: t.decay.unwrap_or(defaults::EWMA_DECAY),
            },
            "sh" | "source" => Algorithm::Sh {
                prefix: t.prefix.unwrap_or(false),
                factor,
            },
            "dh" => Algorithm::Dh { factor },
            "uri" => Algorithm::Uri {
                key: UriKey {
                    whole: t.whole.unwrap_or(false),
                    depth: t.depth,
                    len: t.len,
                },
                factor,
            },
            "url_param" => match &t.param {
                Some(p) if !p.is_empty() => Algorithm::UrlParam {
                    param: p.clone(),
                    factor,
                },
                _ => {
                    self.err(
                        bal,
                        format!("{ctx}: balance \"url_param\" needs param = \"NAME\""),
                    );
                    Algorithm::Rr
                }
            },
            "lblc" => Algorithm::Lblc {
                expire: t.expire.unwrap_or(defaults::LBLC_EXPIRE),
            },
            "lblcr" => Algorithm::Lblcr {
                expire: t.expire.unwrap_or(defaults::LBLCR_EXPIRE),
                shrink: t.shrink.unwrap_or(defaults::LBLCR_SHRINK),
            },
            other => {
                let hint = nearest(other, Algorithm::NAMES.iter().copied())
                    .map(|h| format!("did you mean \"{h}\"?"))
                    .unwrap_or_else(|| format!("known: {}", Algorithm::NAMES.join(", ")));
                self.err(
                    bal,
                    format!("{ctx}: unknown balance algorithm \"{other}\" ({hint})"),
                );
                Algorithm::Rr
            }
        }
    }

    fn server(&mut self, ctx: &str, s: &ServerFile) -> Option<ServerConfig> {
        let name = s.name.get_ref().clone();
        let ctx = format!("{ctx}: server \"{name}\"");
        if name.is_empty() || name.contains('/') || name.chars().any(char::is_whitespace) {
            self.err(
                &s.name,
                format!("{ctx}: a server name must be non-empty, without '/' or spaces"),
            );
        }
        let weight = match &s.weight {
            Some(w) if *w.get_ref() > defaults::MAX_WEIGHT => {
                self.err(
                    w,
                    format!("{ctx}: weight {} is out of range 0..=256", w.get_ref()),
                );
                defaults::WEIGHT
            }
            Some(w) => *w.get_ref(),
            None => defaults::WEIGHT,
        };
        let maxconn = s.maxconn.as_ref().map(|m| self.positive(m, "maxconn"));
        let raw = s.address.get_ref();
        let addr = match raw.parse::<SocketAddr>() {
            Ok(a) => Some(a),
            // Host names are resolved once, at load time.
            Err(_) => raw.to_socket_addrs().ok().and_then(|mut it| it.next()),
        };
        let Some(addr) = addr else {
            // HOST:PORT with a valid port whose host does not resolve is not a
            // malformed address: say which it is.
            let msg = match raw.rsplit_once(':') {
                Some((host, port))
                    if !host.is_empty()
                        && !host.contains(['/', ' '])
                        && port.parse::<u16>().is_ok() =>
                {
                    format!("{ctx}: \"{host}\" does not resolve (address \"{raw}\")")
                }
                _ => format!(
                    "{ctx}: invalid address \"{raw}\" (expected HOST:PORT, like \"127.0.0.1:9001\")"
                ),
            };
            self.err(&s.address, msg);
            return None;
        };
        if addr.port() == 0 {
            self.err(
                &s.address,
                format!("{ctx}: address \"{raw}\" needs a port other than 0"),
            );
        }
        let cookie = match &s.cookie {
            Some(c) => {
                let v = c.get_ref();
                if v.is_empty()
                    || !v
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
                {
                    self.err(c, format!("{ctx}: cookie value \"{v}\" may hold only letters, digits, '-', '_' and '.'"));
                }
                v.clone()
            }
            None => name.clone(),
        };
        Some(ServerConfig {
            name,
            addr,
            weight,
            maxconn,
            backup: s.backup,
            send_proxy: s.send_proxy,
            cookie,
            health: None,
            tls: None,
        })
    }
}
