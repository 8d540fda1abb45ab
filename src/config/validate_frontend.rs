//! Validation of `[[frontend]]` tables: listen addresses, limits, the default
//! backend, ACLs and rules (`validate_l7`), per-source limits, path
//! normalisation, error files and TLS (`validate_tls`).

use std::net::SocketAddr;

use toml::Spanned;

use super::error::nearest;
use super::file::{FrontendFile, Mode};
use super::routing::PathOptions;
use super::validate::{Validator, conflicts};
use super::{Frontend, FrontendTimeouts, defaults};

impl Validator<'_> {
    pub(super) fn frontend(
        &mut self,
        f: &FrontendFile,
        backends: &[&str],
        bound: &mut Vec<(SocketAddr, String)>,
    ) -> Option<(Frontend, Vec<super::validate_l7::BackendRef>)> {
        let name = f.name.get_ref().clone();
        let ctx = format!("frontend \"{name}\"");
        if name.is_empty() {
            self.err(&f.name, "frontend name must not be empty");
        }
        let mode = f.mode.as_ref().map_or(Mode::Tcp, |m| *m.get_ref());
        if f.listen.get_ref().is_empty() {
            self.err(
                &f.listen,
                format!("{ctx}: listen must name at least one address"),
            );
        }
        let mut listen = Vec::new();
        for l in f.listen.get_ref() {
            match l.get_ref().parse::<SocketAddr>() {
                Ok(addr) => {
                    if let Some((_, other)) = bound.iter().find(|(b, _)| conflicts(*b, addr)) {
                        let other = other.clone();
                        self.err(
                            l,
                            format!("{ctx}: address {addr} is already used by frontend \"{other}\""),
                        );
                    }
                    bound.push((addr, name.clone()));
                    listen.push(addr);
                }
                Err(_) => self.err(
                    l,
                    format!(
                        "{ctx}: invalid listen address \"{}\" (expected IP:PORT, like \"127.0.0.1:8080\" or \"[::1]:8080\")",
                        l.get_ref()
                    ),
                ),
            }
        }
        let maxconn = f.maxconn.as_ref().map(|m| self.positive(m, "maxconn"));
        let backlog = f
            .backlog
            .as_ref()
            .map_or(defaults::BACKLOG, |b| self.positive(b, "backlog"));
        let wanted = f.default_backend.get_ref();
        let default_backend = match backends.iter().position(|b| b == wanted) {
            Some(i) => i,
            None => {
                let hint = nearest(wanted, backends.iter().copied())
                    .map(|h| format!(" (did you mean \"{h}\"?)"))
                    .unwrap_or_default();
                self.err(
                    &f.default_backend,
                    format!("{ctx}: default_backend \"{wanted}\" is not a defined backend{hint}"),
                );
                return None;
            }
        };
        let acls = self.acls(&ctx, &f.acl);
        let (rules, mut refs) = self.rules(&ctx, &f.rules, &acls, backends);
        if mode == Mode::Tcp {
            // A tcp frontend routes with use_backend rules only (by SNI,
            // source or port), before any byte goes to a server.
            for (raw, rule) in f.rules.iter().zip(&rules) {
                if !matches!(rule.action, super::routing::Action::UseBackend(_)) {
                    self.err(
                        raw,
                        format!("{ctx}: in mode = \"tcp\" a rule can only be use_backend (the other actions need mode = \"http\")"),
                    );
                }
            }
            // Its ACLs look at the connection only.
            for (name, a) in &f.acl {
                if let Some(acl) = acls.iter().find(|x| &x.name == name)
                    && !matches!(
                        acl.matcher,
                        super::routing::Matcher::Src(_)
                            | super::routing::Matcher::DstPort(_)
                            | super::routing::Matcher::Sni(_)
                            | super::routing::Matcher::SniSuffix(_)
                            | super::routing::Matcher::Tls(_)
                    )
                {
                    self.err(
                        a,
                        format!("{ctx}: acl \"{name}\": in mode = \"tcp\" an ACL can test src, dst_port, sni, sni_suffix or tls only"),
                    );
                }
            }
        }
        let source_limits = self.source_limits(&ctx, f, mode, &acls);
        refs.push(super::validate_l7::BackendRef {
            backend: default_backend,
            span: f.default_backend.span(),
        });
        let fe = Frontend {
            name,
            listen,
            mode,
            maxconn,
            backlog,
            defer_accept: f.defer_accept.unwrap_or(mode == Mode::Http),
            timeouts: FrontendTimeouts {
                client: f.timeouts.client.unwrap_or(defaults::CLIENT_TIMEOUT),
                http_request: f
                    .timeouts
                    .http_request
                    .unwrap_or(defaults::HTTP_REQUEST_TIMEOUT),
                http_keepalive: f
                    .timeouts
                    .http_keepalive
                    .unwrap_or(defaults::HTTP_KEEPALIVE_TIMEOUT),
            },
            default_backend,
            accept_proxy: f.accept_proxy,
            x_forwarded: f.x_forwarded.unwrap_or(true),
            forwarded: f.forwarded.unwrap_or(false),
            max_head_size: match &f.max_head_size {
                Some(m) if !(1024..=1 << 20).contains(m.get_ref()) => {
                    self.err(
                        m,
                        format!("{ctx}: max_head_size must be between 1024 and 1048576 bytes"),
                    );
                    defaults::MAX_HEAD_SIZE
                }
                Some(m) => *m.get_ref(),
                None => defaults::MAX_HEAD_SIZE,
            },
            max_headers: match &f.max_headers {
                Some(m) if !(1..=1000).contains(m.get_ref()) => {
                    self.err(m, format!("{ctx}: max_headers must be between 1 and 1000"));
                    defaults::MAX_HEADERS
                }
                Some(m) => *m.get_ref(),
                None => defaults::MAX_HEADERS,
            },
            error_pages: self.error_pages(&ctx, &f.error_files),
            acls,
            rules,
            path: self.path_options(&ctx, f, mode),
            source_limits,
            tls: f.tls.as_ref().and_then(|t| self.tls(&ctx, t, mode)),
        };
        Some((fe, refs))
    }

    /// `limits` and `limits_unless`.
    fn source_limits(
        &mut self,
        ctx: &str,
        f: &FrontendFile,
        mode: Mode,
        acls: &[super::routing::Acl],
    ) -> Option<super::routing::SourceLimits> {
        use super::routing::{Rate, SourceLimits};
        let Some(raw) = &f.limits else {
            if let Some(u) = &f.limits_unless {
                self.err(u, format!("{ctx}: limits_unless without limits"));
            }
            return None;
        };
        let l = raw.get_ref();
        let rate = |me: &mut Self, v: &Option<Spanned<String>>, key: &str| -> Option<Rate> {
            let v = v.as_ref()?;
            let r = Rate::parse(v.get_ref());
            if r.is_none() {
                me.err(
                    v,
                    format!(
                        "{ctx}: limits.{key} must be a rate like \"10/s\" or \"600/m\", not \"{}\"",
                        v.get_ref()
                    ),
                );
            }
            r
        };
        let conn_rate = rate(self, &l.conn_rate_per_source, "conn_rate_per_source");
        let req_rate = rate(self, &l.req_rate_per_source, "req_rate_per_source");
        if mode == Mode::Tcp
            && let Some(r) = &l.req_rate_per_source
        {
            self.err(
                r,
                format!("{ctx}: limits.req_rate_per_source needs mode = \"http\""),
            );
        }
        let conn_per_source = l
            .conn_per_source
            .as_ref()
            .map(|n| self.positive(n, "limits.conn_per_source"));
        if conn_per_source.is_none() && conn_rate.is_none() && req_rate.is_none() {
            self.err(
                raw,
                format!("{ctx}: limits sets no limit (conn_per_source, conn_rate_per_source or req_rate_per_source)"),
            );
        }
        let table_size = l
            .table_size
            .as_ref()
            .map_or(defaults::LIMITS_TABLE_SIZE, |n| {
                self.positive(n, "limits.table_size")
            });
        let unless = match &f.limits_unless {
            Some(u) => {
                let c = self.condition(ctx, u, acls, false)?;
                // Evaluated once per connection, before any request.
                for t in c.any.iter().flatten() {
                    let Some(a) = acls.get(t.acl) else { continue };
                    if !matches!(
                        a.matcher,
                        super::routing::Matcher::Src(_) | super::routing::Matcher::DstPort(_)
                    ) {
                        self.err(
                            u,
                            format!("{ctx}: limits_unless: acl \"{}\" tests the request; only src and dst_port ACLs can exempt a source", a.name),
                        );
                    }
                }
                Some(c)
            }
            None => None,
        };
        Some(SourceLimits {
            conn_per_source,
            conn_rate,
            req_rate,
            table_size,
            expire: l.expire.unwrap_or(defaults::LIMITS_EXPIRE),
            unless,
        })
    }

    /// `path_normalize` and `path_options` (http only).
    fn path_options(&mut self, ctx: &str, f: &FrontendFile, mode: Mode) -> PathOptions {
        use super::routing::{PathMode, Treat};
        let mut o = PathOptions::default();
        if mode == Mode::Tcp {
            if let Some(p) = &f.path_normalize {
                self.err(p, format!("{ctx}: path_normalize needs mode = \"http\""));
            }
            if let Some(p) = &f.path_options {
                self.err(p, format!("{ctx}: path_options needs mode = \"http\""));
            }
            return o;
        }
        if let Some(p) = &f.path_normalize {
            o.mode = match p.get_ref().as_str() {
                "forward" => PathMode::Forward,
                "match-only" => PathMode::MatchOnly,
                "off" => {
                    self.warn(
                        p,
                        format!("{ctx}: path_normalize = \"off\": path ACLs can be walked around with /%61dmin, //admin or /x/../admin"),
                    );
                    PathMode::Off
                }
                other => {
                    self.err(
                        p,
                        format!("{ctx}: path_normalize must be \"forward\", \"match-only\" or \"off\", not \"{other}\""),
                    );
                    PathMode::Forward
                }
            };
        }
        let Some(po) = &f.path_options else {
            return o;
        };
        let raw = po.get_ref();
        if let Some(m) = raw.merge_slashes {
            o.merge_slashes = m;
        }
        let treat = |me: &mut Self, v: &Option<Spanned<String>>, key: &str, third: Option<&str>| {
            let v = v.as_ref()?;
            Some(match (v.get_ref().as_str(), third) {
                ("reject", _) => Treat::Reject,
                ("keep", _) => Treat::Keep,
                (w, Some(t)) if w == t => Treat::Slash,
                (other, third) => {
                    let allowed = match third {
                        Some(t) => format!("\"reject\", \"keep\" or \"{t}\""),
                        None => "\"reject\" or \"keep\"".to_string(),
                    };
                    me.err(
                        v,
                        format!("{ctx}: path_options.{key} must be {allowed}, not \"{other}\""),
                    );
                    Treat::Reject
                }
            })
        };
        let d = PathOptions::default();
        o.encoded_slash = treat(self, &raw.encoded_slash, "encoded_slash", Some("decode"))
            .unwrap_or(d.encoded_slash);
        o.backslash =
            treat(self, &raw.backslash, "backslash", Some("slash")).unwrap_or(d.backslash);
        o.encoded_control =
            treat(self, &raw.encoded_control, "encoded_control", None).unwrap_or(d.encoded_control);
        o.invalid_escape =
            treat(self, &raw.invalid_escape, "invalid_escape", None).unwrap_or(d.invalid_escape);
        o.path_params = treat(self, &raw.path_params, "path_params", None).unwrap_or(d.path_params);
        o
    }

    fn error_pages(
        &mut self,
        ctx: &str,
        files: &std::collections::BTreeMap<String, Spanned<String>>,
    ) -> Vec<super::ErrorPage> {
        let mut pages = Vec::new();
        for (status, path) in files {
            let code = match status.parse::<u16>() {
                Ok(c) if (400..=599).contains(&c) => c,
                _ => {
                    self.err(
                        path,
                        format!("{ctx}: error_files key \"{status}\" is not a 4xx or 5xx status"),
                    );
                    continue;
                }
            };
            // Relative paths are relative to the config file.
            let base = std::path::Path::new(self.file)
                .parent()
                .unwrap_or(std::path::Path::new("."));
            let full = base.join(path.get_ref());
            match std::fs::read(&full) {
                Ok(body) => pages.push(super::ErrorPage {
                    status: code,
                    content_type: if path.get_ref().ends_with(".html") {
                        "text/html"
                    } else {
                        "text/plain"
                    },
                    body: body.into(),
                }),
                Err(e) => self.err(
                    path,
                    format!("{ctx}: cannot read error file \"{}\": {e}", full.display()),
                ),
            }
        }
        pages
    }
}
