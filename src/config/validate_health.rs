//! Validation of `health`, `eject` and `on_all_down` (see `config::health`).

use std::path::Path;

use toml::Spanned;

use super::file::{EjectFile, HealthFile, ServerFile};
use super::health::{CheckKind, Eject, HealthCheck, OnAllDown, defaults, parse_status_list};
use super::validate::Validator;

impl Validator<'_> {
    /// The backend's own check (its errors reported once, here).
    pub(super) fn backend_health(
        &mut self,
        ctx: &str,
        backend: Option<&Spanned<HealthFile>>,
    ) -> Option<HealthCheck> {
        let b = backend?;
        self.health_check(ctx, Some(b.span()), b.get_ref())
    }

    /// A server's check: the backend's (`base`, validated already), or the
    /// backend's `health` with the server's overrides, or none (`health =
    /// false`, or no check anywhere).
    pub(super) fn server_health(
        &mut self,
        ctx: &str,
        backend: Option<&Spanned<HealthFile>>,
        base: Option<&HealthCheck>,
        s: &ServerFile,
    ) -> Option<HealthCheck> {
        let ctx = format!("{ctx}: server \"{}\"", s.name.get_ref());
        let Some(v) = s.health.as_ref() else {
            return base.cloned();
        };
        let merged = match v.get_ref() {
            toml::Value::Boolean(false) => return None,
            toml::Value::Boolean(true) => {
                if base.is_none() && backend.is_none() {
                    self.err(
                        v,
                        format!("{ctx}: health = true, but the backend has no health check to use"),
                    );
                }
                return base.cloned();
            }
            table @ toml::Value::Table(_) => {
                let own: HealthFile = match table.clone().try_into() {
                    Ok(h) => h,
                    Err(e) => {
                        let msg = super::validate::friendly(e.message(), "", None);
                        self.err(v, format!("{ctx}: health: {msg}"));
                        return None;
                    }
                };
                merge(own, backend.map(|b| b.get_ref()))
            }
            _ => {
                self.err(v, format!("{ctx}: health must be false, true or a table"));
                return None;
            }
        };
        self.health_check(&ctx, Some(v.span()), &merged)
    }

    fn health_err(&mut self, span: Option<std::ops::Range<usize>>, msg: String) {
        let e = self.loc.error(span, msg);
        self.errors.push(e);
    }

    /// Validate one (merged) check.
    fn health_check(
        &mut self,
        ctx: &str,
        span: Option<std::ops::Range<usize>>,
        f: &HealthFile,
    ) -> Option<HealthCheck> {
        let interval = f.interval.unwrap_or(defaults::INTERVAL);
        let timeout = f.timeout.unwrap_or(defaults::TIMEOUT.min(interval));
        if interval.is_zero() {
            self.health_err(
                span.clone(),
                format!("{ctx}: health interval must be more than 0"),
            );
        }
        if timeout > interval {
            self.health_err(
                span.clone(),
                format!(
                    "{ctx}: health timeout {} is longer than its interval {}: checks would overlap",
                    super::units::fmt_duration(timeout),
                    super::units::fmt_duration(interval)
                ),
            );
        }
        let (rise, fall) = (
            f.rise.unwrap_or(defaults::RISE),
            f.fall.unwrap_or(defaults::FALL),
        );
        if rise == 0 || fall == 0 {
            self.health_err(
                span.clone(),
                format!("{ctx}: health rise and fall must be at least 1"),
            );
        }
        let address = match &f.address {
            None => None,
            Some(a) => match a.parse() {
                Ok(ip) => Some(ip),
                Err(_) => {
                    self.health_err(
                        span.clone(),
                        format!("{ctx}: health address \"{a}\" is not an IP address"),
                    );
                    None
                }
            },
        };
        let kind = self.check_kind(ctx, span, f)?;
        Some(HealthCheck {
            kind,
            interval,
            timeout,
            fastinter: f.fastinter.unwrap_or(interval),
            downinter: f.downinter.unwrap_or(interval),
            rise: rise.max(1),
            fall: fall.max(1),
            port: f.port,
            address,
        })
    }

    fn check_kind(
        &mut self,
        ctx: &str,
        span: Option<std::ops::Range<usize>>,
        f: &HealthFile,
    ) -> Option<CheckKind> {
        let name = f.check.as_deref().unwrap_or("tcp");
        let misplaced = |set: &[(&str, bool)]| -> Vec<String> {
            set.iter()
                .filter(|(_, on)| *on)
                .map(|(k, _)| k.to_string())
                .collect()
        };
        let http_keys = [
            ("method", f.method.is_some()),
            ("path", f.path.is_some()),
            ("host", f.host.is_some()),
            ("headers", f.headers.is_some()),
            ("expect_status", f.expect_status.is_some()),
            ("expect_body", f.expect_body.is_some()),
        ];
        let tcp_keys = [("send", f.send.is_some()), ("expect", f.expect.is_some())];
        let script_keys = [
            ("command", f.command.is_some()),
            ("dynamic_weight", f.dynamic_weight.is_some()),
        ];
        let foreign: Vec<String> = match name {
            "tcp" => [misplaced(&http_keys), misplaced(&script_keys)].concat(),
            "http" => [misplaced(&tcp_keys), misplaced(&script_keys)].concat(),
            "script" => [misplaced(&http_keys), misplaced(&tcp_keys)].concat(),
            _ => [
                misplaced(&http_keys),
                misplaced(&tcp_keys),
                misplaced(&script_keys),
            ]
            .concat(),
        };
        if !foreign.is_empty() && ["tcp", "http", "script", "icmp"].contains(&name) {
            self.health_err(
                span.clone(),
                format!(
                    "{ctx}: {} {} not apply to a \"{name}\" check",
                    foreign.join(", "),
                    if foreign.len() == 1 { "does" } else { "do" }
                ),
            );
        }
        Some(match name {
            "tcp" => CheckKind::Tcp {
                send: f.send.clone(),
                expect: f.expect.clone(),
            },
            "http" => self.http_check(ctx, span, f)?,
            "script" => self.script_check(ctx, span, f)?,
            "icmp" => CheckKind::Icmp,
            other => {
                let hint = super::error::nearest(other, ["tcp", "http", "script", "icmp"])
                    .map(|h| format!(" (did you mean \"{h}\"?)"))
                    .unwrap_or_default();
                self.health_err(
                    span,
                    format!(
                        "{ctx}: unknown health check \"{other}\"{hint} (tcp, http, script or icmp)"
                    ),
                );
                return None;
            }
        })
    }

    fn http_check(
        &mut self,
        ctx: &str,
        span: Option<std::ops::Range<usize>>,
        f: &HealthFile,
    ) -> Option<CheckKind> {
        let expect_status = match &f.expect_status {
            None => vec![(200, 399)],
            Some(v) => {
                let parts: Vec<String> = match v {
                    toml::Value::Integer(n) => vec![n.to_string()],
                    toml::Value::String(s) => vec![s.clone()],
                    toml::Value::Array(a) => a
                        .iter()
                        .map(|x| match x {
                            toml::Value::Integer(n) => n.to_string(),
                            toml::Value::String(s) => s.clone(),
                            _ => String::new(),
                        })
                        .collect(),
                    _ => vec![String::new()],
                };
                match parse_status_list(&parts.join(",")) {
                    Some(l) => l,
                    None => {
                        self.health_err(span, format!("{ctx}: expect_status must be a status, a range or a list of them, like \"200-399\" or [200, \"301-302\"] (statuses 100 to 599)"));
                        return None;
                    }
                }
            }
        };
        let path = f.path.clone().unwrap_or_else(|| "/".into());
        if !path.starts_with('/') || path.bytes().any(|b| b <= b' ' || b == 0x7f) {
            self.health_err(span.clone(), format!("{ctx}: health path \"{path}\" must start with '/' and hold no spaces or controls"));
        }
        let method = f.method.clone().unwrap_or_else(|| "GET".into());
        if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
            self.health_err(
                span.clone(),
                format!("{ctx}: health method \"{method}\" is not a method"),
            );
        }
        let mut headers = Vec::new();
        for h in f.headers.iter().flatten() {
            match h.split_once(':') {
                Some((n, v)) if !n.trim().is_empty() && !h.contains(['\r', '\n']) => {
                    headers.push((n.trim().to_string(), v.trim().to_string()))
                }
                _ => self.health_err(
                    span.clone(),
                    format!("{ctx}: health header \"{h}\" is not \"Name: value\""),
                ),
            }
        }
        Some(CheckKind::Http {
            method,
            path,
            host: f.host.clone(),
            headers,
            expect_status,
            expect_body: f.expect_body.clone(),
        })
    }

    fn script_check(
        &mut self,
        ctx: &str,
        span: Option<std::ops::Range<usize>>,
        f: &HealthFile,
    ) -> Option<CheckKind> {
        let Some(command) = f.command.clone().filter(|c| !c.is_empty()) else {
            self.health_err(
                span,
                format!("{ctx}: a script check needs command = [\"/path/to/program\", ...]"),
            );
            return None;
        };
        if let Err(why) = executable(&command[0]) {
            self.health_err(
                span,
                format!("{ctx}: health command \"{}\" {why}", command[0]),
            );
            return None;
        }
        Some(CheckKind::Script {
            command,
            dynamic_weight: f.dynamic_weight.unwrap_or(false),
        })
    }

    pub(super) fn eject(&mut self, ctx: &str, e: &Spanned<EjectFile>) -> Option<Eject> {
        let f = e.get_ref();
        let positive = |me: &mut Self, v: &Option<Spanned<u32>>, key: &str| {
            v.as_ref().map(|n| me.positive(n, &format!("eject.{key}")))
        };
        let consecutive_5xx = positive(self, &f.consecutive_5xx, "consecutive_5xx");
        let consecutive_connect_failures = positive(
            self,
            &f.consecutive_connect_failures,
            "consecutive_connect_failures",
        );
        let none = consecutive_5xx.is_none() && consecutive_connect_failures.is_none();
        if none {
            self.err(
                e,
                format!("{ctx}: eject needs consecutive_5xx or consecutive_connect_failures"),
            );
        }
        let max_percent = match &f.max_percent {
            Some(p) if *p.get_ref() == 0 || *p.get_ref() > 100 => {
                self.err(
                    p,
                    format!("{ctx}: eject.max_percent must be between 1 and 100"),
                );
                defaults::EJECT_MAX_PERCENT
            }
            Some(p) => *p.get_ref(),
            None => defaults::EJECT_MAX_PERCENT,
        };
        let base_time = f.base_time.unwrap_or(defaults::EJECT_BASE);
        if none {
            return None;
        }
        Some(Eject {
            consecutive_5xx,
            consecutive_connect_failures,
            base_time,
            max_time: f.max_time.unwrap_or(defaults::EJECT_MAX).max(base_time),
            max_percent,
        })
    }

    pub(super) fn on_all_down(&mut self, ctx: &str, v: Option<&Spanned<String>>) -> OnAllDown {
        match v.map(|v| (v, v.get_ref().as_str())) {
            None | Some((_, "reject")) => OnAllDown::Reject,
            Some((_, "fail_open")) => OnAllDown::FailOpen,
            Some((v, other)) => {
                self.err(
                    v,
                    format!(
                        "{ctx}: on_all_down must be \"reject\" or \"fail_open\", not \"{other}\""
                    ),
                );
                OnAllDown::Reject
            }
        }
    }
}

/// The server's fields over the backend's.
fn merge(own: HealthFile, base: Option<&HealthFile>) -> HealthFile {
    let Some(b) = base else { return own };
    let b = b.clone();
    HealthFile {
        check: own.check.or(b.check),
        interval: own.interval.or(b.interval),
        timeout: own.timeout.or(b.timeout),
        fastinter: own.fastinter.or(b.fastinter),
        downinter: own.downinter.or(b.downinter),
        rise: own.rise.or(b.rise),
        fall: own.fall.or(b.fall),
        port: own.port.or(b.port),
        address: own.address.or(b.address),
        send: own.send.or(b.send),
        expect: own.expect.or(b.expect),
        method: own.method.or(b.method),
        path: own.path.or(b.path),
        host: own.host.or(b.host),
        headers: own.headers.or(b.headers),
        expect_status: own.expect_status.or(b.expect_status),
        expect_body: own.expect_body.or(b.expect_body),
        command: own.command.or(b.command),
        dynamic_weight: own.dynamic_weight.or(b.dynamic_weight),
    }
}

/// Whether `program` (a path, or a name looked up in PATH) can be run.
fn executable(program: &str) -> Result<(), &'static str> {
    use std::os::unix::fs::PermissionsExt;
    let ok = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if program.contains('/') {
        let p = Path::new(program);
        if !p.exists() {
            return Err("does not exist");
        }
        return if ok(p) {
            Ok(())
        } else {
            Err("is not an executable file")
        };
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    if std::env::split_paths(&path).any(|d| ok(&d.join(program))) {
        Ok(())
    } else {
        Err("is not found in PATH")
    }
}
