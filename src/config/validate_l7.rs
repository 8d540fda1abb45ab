//! Validation of the layer-7 routing keys: `acl`, `rules` and `persist`.
//! Every problem is reported with its line and column, like the rest.

use std::collections::BTreeMap;
use std::ops::Range;

use regex::{Regex, RegexBuilder};
use toml::Spanned;

use super::error::nearest;
use super::file::{AclFile, PersistFile, RedirectFile, RuleFile};
use super::routing::{
    Acl, Action, Cidr, Condition, CookieMode, HeaderOp, Matcher, PathValues, Persist, RedirectTo,
    Rule, Sticky, ValueTest, is_field_value, is_token, strip_port,
};
use super::validate::Validator;

/// Defaults for source persistence.
pub const SOURCE_EXPIRE: std::time::Duration = std::time::Duration::from_secs(30 * 60);
pub const SOURCE_SIZE: u32 = 100_000;

/// A backend referenced by a rule, with where it was named.
pub struct BackendRef {
    pub backend: usize,
    pub span: Range<usize>,
}

impl Validator<'_> {
    fn err_at(&mut self, span: Range<usize>, msg: impl Into<String>) {
        let e = self.loc.error(Some(span), msg);
        self.errors.push(e);
    }

    pub(super) fn acls(&mut self, ctx: &str, raw: &BTreeMap<String, Spanned<AclFile>>) -> Vec<Acl> {
        let mut out = Vec::new();
        for (name, a) in raw {
            if !is_token(name) || name == "or" {
                self.err(
                    a,
                    format!("{ctx}: ACL name \"{name}\" must be a word without spaces or \"!\""),
                );
                continue;
            }
            if let Some(matcher) = self.matcher(&format!("{ctx}: acl \"{name}\""), a) {
                out.push(Acl {
                    name: name.clone(),
                    matcher,
                });
            }
        }
        out
    }

    fn regex(&mut self, ctx: &str, at: &Spanned<AclFile>, re: &str, nocase: bool) -> Option<Regex> {
        match RegexBuilder::new(re)
            .case_insensitive(nocase)
            .size_limit(1 << 20)
            .build()
        {
            Ok(r) => Some(r),
            Err(e) => {
                let first = e.to_string();
                let first = first.lines().last().unwrap_or("").trim().to_string();
                self.err(at, format!("{ctx}: invalid regex \"{re}\": {first}"));
                None
            }
        }
    }

    fn matcher(&mut self, ctx: &str, at: &Spanned<AclFile>) -> Option<Matcher> {
        let a = at.get_ref();
        let fetches: Vec<&str> = [
            ("path", a.path.is_some()),
            ("path_prefix", a.path_prefix.is_some()),
            ("path_suffix", a.path_suffix.is_some()),
            ("path_regex", a.path_regex.is_some()),
            ("host", a.host.is_some()),
            ("host_suffix", a.host_suffix.is_some()),
            ("host_regex", a.host_regex.is_some()),
            ("method", a.method.is_some()),
            ("header", a.header.is_some()),
            ("query", a.query.is_some()),
            ("cookie", a.cookie.is_some()),
            ("src", a.src.is_some()),
            ("dst_port", a.dst_port.is_some()),
            ("sni", a.sni.is_some()),
            ("sni_suffix", a.sni_suffix.is_some()),
            ("tls", a.tls.is_some()),
            ("tls_client_verified", a.tls_client_verified.is_some()),
        ]
        .into_iter()
        .filter_map(|(k, set)| set.then_some(k))
        .collect();
        let ops = [a.equals.is_some(), a.prefix.is_some(), a.regex.is_some()]
            .into_iter()
            .filter(|x| *x)
            .count();
        let fetch = match fetches.as_slice() {
            [one] => *one,
            [] => {
                self.err(at, format!("{ctx}: needs one of path, path_prefix, path_suffix, path_regex, host, host_suffix, host_regex, method, header, query, cookie, src, dst_port, sni, sni_suffix, tls, tls_client_verified"));
                return None;
            }
            many => {
                self.err(at, format!("{ctx}: one ACL tests one thing, but this one has {} (split it into several ACLs and combine them in the condition)", many.join(", ")));
                return None;
            }
        };
        if a.ignore_case && !fetch.starts_with("path") {
            self.err(
                at,
                format!("{ctx}: ignore_case applies to path matchers only (hosts are always compared without case)"),
            );
            return None;
        }
        let takes_ops = matches!(fetch, "header" | "query" | "cookie");
        if ops > 0 && !takes_ops {
            self.err(
                at,
                format!("{ctx}: equals/prefix/regex apply to header, query and cookie only"),
            );
            return None;
        }
        if ops > 1 {
            self.err(at, format!("{ctx}: use one of equals, prefix, regex"));
            return None;
        }
        if (fetch == "query" || fetch == "cookie") && (a.prefix.is_some() || a.regex.is_some()) {
            self.err(at, format!("{ctx}: {fetch} takes equals only"));
            return None;
        }
        let lower = |v: &[String]| -> Vec<String> {
            v.iter()
                .map(|h| strip_port(h).to_ascii_lowercase())
                .collect()
        };
        let test = |me: &mut Self| -> Option<ValueTest> {
            Some(if let Some(e) = &a.equals {
                ValueTest::Equals(e.0.clone())
            } else if let Some(p) = &a.prefix {
                ValueTest::Prefix(p.clone())
            } else if let Some(r) = &a.regex {
                ValueTest::Regex(me.regex(ctx, at, r, false)?)
            } else {
                ValueTest::Present
            })
        };
        let non_empty = |me: &mut Self, v: &[String]| {
            if v.is_empty() {
                me.err(at, format!("{ctx}: {fetch} lists no value"));
            }
        };
        Some(match fetch {
            "path" | "path_prefix" | "path_suffix" => {
                let v = a
                    .path
                    .as_ref()
                    .or(a.path_prefix.as_ref())
                    .or(a.path_suffix.as_ref())
                    .map(|l| l.0.clone())
                    .unwrap_or_default();
                non_empty(self, &v);
                let v = PathValues {
                    list: v,
                    nocase: a.ignore_case,
                };
                match fetch {
                    "path" => Matcher::Path(v),
                    "path_prefix" => Matcher::PathPrefix(v),
                    _ => Matcher::PathSuffix(v),
                }
            }
            "path_regex" => {
                Matcher::PathRegex(self.regex(ctx, at, a.path_regex.as_deref()?, a.ignore_case)?)
            }
            "host" => {
                let v = lower(&a.host.as_ref()?.0);
                non_empty(self, &v);
                Matcher::Host(v)
            }
            "host_suffix" => {
                let v = lower(&a.host_suffix.as_ref()?.0);
                non_empty(self, &v);
                Matcher::HostSuffix(v)
            }
            "host_regex" => {
                Matcher::HostRegex(self.regex(ctx, at, a.host_regex.as_deref()?, true)?)
            }
            "method" => {
                let v = a.method.as_ref()?.0.clone();
                non_empty(self, &v);
                if let Some(bad) = v.iter().find(|m| !is_token(m)) {
                    self.err(at, format!("{ctx}: \"{bad}\" is not a method"));
                }
                Matcher::Method(v)
            }
            "header" => {
                let name = a.header.clone()?;
                if !is_token(&name) {
                    self.err(at, format!("{ctx}: \"{name}\" is not a header name"));
                }
                Matcher::Header {
                    name,
                    test: test(self)?,
                }
            }
            "query" => Matcher::Query {
                name: a.query.clone()?,
                test: test(self)?,
            },
            "cookie" => Matcher::Cookie {
                name: a.cookie.clone()?,
                test: test(self)?,
            },
            "src" => {
                let mut v = Vec::new();
                for s in &a.src.as_ref()?.0 {
                    match Cidr::parse(s) {
                        Some(c) => v.push(c),
                        None => self.err(at, format!("{ctx}: \"{s}\" is not an address or CIDR block (like \"10.0.0.0/8\" or \"2001:db8::/32\")")),
                    }
                }
                if v.is_empty() {
                    self.err(at, format!("{ctx}: src lists no address"));
                }
                Matcher::Src(v)
            }
            "sni" | "sni_suffix" => {
                let list = a.sni.as_ref().or(a.sni_suffix.as_ref())?;
                let v: Vec<String> = list
                    .0
                    .iter()
                    .map(|n| n.trim_end_matches('.').to_ascii_lowercase())
                    .collect();
                if v.is_empty() {
                    self.err(at, format!("{ctx}: {fetch} lists no name"));
                }
                if fetch == "sni" {
                    Matcher::Sni(v)
                } else {
                    Matcher::SniSuffix(v)
                }
            }
            "tls" => Matcher::Tls(a.tls?),
            "tls_client_verified" => Matcher::TlsClientVerified(a.tls_client_verified?),
            _ => {
                let v = a.dst_port.as_ref()?.0.clone();
                if v.is_empty() {
                    self.err(at, format!("{ctx}: dst_port lists no port"));
                }
                Matcher::DstPort(v)
            }
        })
    }

    pub(super) fn condition(
        &mut self,
        ctx: &str,
        text: &Spanned<String>,
        acls: &[Acl],
        negate: bool,
    ) -> Option<Condition> {
        match Condition::parse(text.get_ref(), acls, negate) {
            Ok(c) => Some(c),
            Err(e) => {
                // The span starts at the opening quote.
                let start = text.span().start + 1 + e.at;
                self.err_at(start..start + 1, format!("{ctx}: {}", e.message));
                None
            }
        }
    }

    /// The frontend's rules, and every backend they name (for the mode check).
    pub(super) fn rules(
        &mut self,
        ctx: &str,
        raw: &[Spanned<RuleFile>],
        acls: &[Acl],
        backends: &[&str],
    ) -> (Vec<Rule>, Vec<BackendRef>) {
        let mut rules = Vec::new();
        let mut refs = Vec::new();
        if let Some(extra) = raw.get(super::routing::MAX_RULES) {
            self.err(
                extra,
                format!(
                    "{ctx}: at most {} rules per frontend",
                    super::routing::MAX_RULES
                ),
            );
        }
        for (i, r) in raw.iter().enumerate() {
            let rctx = format!("{ctx}: rule {}", i + 1);
            let f = r.get_ref();
            let cond = match (&f.if_, &f.unless) {
                (Some(_), Some(u)) => {
                    self.err(u, format!("{rctx}: use \"if\" or \"unless\", not both"));
                    continue;
                }
                (Some(c), None) => match self.condition(&rctx, c, acls, false) {
                    Some(c) => Some(c),
                    None => continue,
                },
                (None, Some(c)) => match self.condition(&rctx, c, acls, true) {
                    Some(c) => Some(c),
                    None => continue,
                },
                (None, None) => None,
            };
            if let Some(action) = self.action(&rctx, r, backends, &mut refs) {
                rules.push(Rule { cond, action });
            }
        }
        (rules, refs)
    }

    fn backend_ref(
        &mut self,
        ctx: &str,
        name: &Spanned<String>,
        backends: &[&str],
        refs: &mut Vec<BackendRef>,
    ) -> Option<usize> {
        let wanted = name.get_ref();
        match backends.iter().position(|b| b == wanted) {
            Some(i) => {
                refs.push(BackendRef {
                    backend: i,
                    span: name.span(),
                });
                Some(i)
            }
            None => {
                let hint = nearest(wanted, backends.iter().copied())
                    .map(|h| format!(" (did you mean \"{h}\"?)"))
                    .unwrap_or_default();
                self.err(
                    name,
                    format!("{ctx}: backend \"{wanted}\" is not a defined backend{hint}"),
                );
                None
            }
        }
    }

    fn action(
        &mut self,
        ctx: &str,
        r: &Spanned<RuleFile>,
        backends: &[&str],
        refs: &mut Vec<BackendRef>,
    ) -> Option<Action> {
        let f = r.get_ref();
        let set: Vec<&str> = [
            ("deny", f.deny.is_some()),
            ("redirect", f.redirect.is_some()),
            ("use_backend", f.use_backend.is_some()),
            ("split", f.split.is_some()),
            ("set_header", f.set_header.is_some()),
            ("add_header", f.add_header.is_some()),
            ("del_header", f.del_header.is_some()),
            ("set_response_header", f.set_response_header.is_some()),
            ("add_response_header", f.add_response_header.is_some()),
            ("del_response_header", f.del_response_header.is_some()),
        ]
        .into_iter()
        .filter_map(|(k, s)| s.then_some(k))
        .collect();
        match set.as_slice() {
            [_] => {}
            [] => {
                self.err(r, format!("{ctx}: needs one action: deny, redirect, use_backend, split, set_header, add_header, del_header, set_response_header, add_response_header or del_response_header"));
                return None;
            }
            many => {
                self.err(
                    r,
                    format!(
                        "{ctx}: one rule does one thing, but this one has {} (write one rule each)",
                        many.join(", ")
                    ),
                );
                return None;
            }
        }
        if f.body.is_some() && f.deny.is_none() {
            self.err(r, format!("{ctx}: body goes with deny only"));
        }
        if f.sticky.is_some() && f.split.is_none() {
            self.err(r, format!("{ctx}: sticky goes with split only"));
        }
        if let Some(d) = &f.deny {
            let status = *d.get_ref();
            if !(400..=599).contains(&status) {
                self.err(d, format!("{ctx}: deny status must be 4xx or 5xx"));
            }
            return Some(Action::Deny {
                status,
                body: f.body.as_ref().map(|b| b.as_bytes().into()),
            });
        }
        if let Some(rd) = &f.redirect {
            return self.redirect(ctx, rd);
        }
        if let Some(b) = &f.use_backend {
            return self
                .backend_ref(ctx, b, backends, refs)
                .map(Action::UseBackend);
        }
        if let Some(split) = &f.split {
            let mut targets = Vec::new();
            for t in split.get_ref() {
                let w = *t.weight.get_ref();
                if w == 0 || w > 1_000_000 {
                    self.err(
                        &t.weight,
                        format!("{ctx}: split weight must be between 1 and 1000000"),
                    );
                }
                if let Some(b) = self.backend_ref(ctx, &t.backend, backends, refs) {
                    targets.push((b, w.max(1)));
                }
            }
            if split.get_ref().len() < 2 {
                self.err(split, format!("{ctx}: split needs at least two backends"));
            }
            let sticky = match &f.sticky {
                None => None,
                Some(s) => match s.get_ref().as_str() {
                    "src" => Some(Sticky::Src),
                    v => match v.strip_prefix("cookie:") {
                        Some(name) if is_token(name) => Some(Sticky::Cookie(name.to_string())),
                        _ => {
                            self.err(
                                s,
                                format!("{ctx}: sticky must be \"src\" or \"cookie:NAME\""),
                            );
                            None
                        }
                    },
                },
            };
            return Some(Action::Split { targets, sticky });
        }
        let header =
            |me: &mut Self, v: &Spanned<String>, with_value: bool| -> Option<(String, String)> {
                let text = v.get_ref();
                let (name, value) = if with_value {
                    match text.split_once(':') {
                        Some((n, val)) => (n, val.trim_matches([' ', '\t'])),
                        None => {
                            me.err(v, format!("{ctx}: write the header as \"Name: value\""));
                            return None;
                        }
                    }
                } else {
                    (text.as_str(), "")
                };
                if !is_token(name) {
                    me.err(v, format!("{ctx}: \"{name}\" is not a header name"));
                    return None;
                }
                if !is_field_value(value) {
                    me.err(
                        v,
                        format!("{ctx}: the header value may not hold control characters"),
                    );
                    return None;
                }
                let lname = name.to_ascii_lowercase();
                if matches!(
                    lname.as_str(),
                    "host"
                        | "content-length"
                        | "transfer-encoding"
                        | "connection"
                        | "upgrade"
                        | "te"
                        | "trailer"
                        | "keep-alive"
                        | "proxy-connection"
                ) {
                    me.err(
                        v,
                        format!(
                            "{ctx}: \"{name}\" frames or routes the message and cannot be rewritten"
                        ),
                    );
                    return None;
                }
                Some((lname, value.to_string()))
            };
        let ops: [(&Option<Spanned<String>>, bool, u8); 6] = [
            (&f.set_header, true, 0),
            (&f.add_header, true, 1),
            (&f.del_header, false, 2),
            (&f.set_response_header, true, 3),
            (&f.add_response_header, true, 4),
            (&f.del_response_header, false, 5),
        ];
        for (v, with_value, kind) in ops {
            let Some(v) = v else { continue };
            let (n, val) = header(self, v, with_value)?;
            let op = match kind % 3 {
                0 => HeaderOp::Set(n, val),
                1 => HeaderOp::Add(n, val),
                _ => HeaderOp::Del(n),
            };
            return Some(if kind < 3 {
                Action::RequestHeader(op)
            } else {
                Action::ResponseHeader(op)
            });
        }
        None
    }

    fn redirect(&mut self, ctx: &str, rd: &Spanned<RedirectFile>) -> Option<Action> {
        let r = rd.get_ref();
        let status = match &r.status {
            Some(s) if ![301, 302, 303, 307, 308].contains(s.get_ref()) => {
                self.err(
                    s,
                    format!("{ctx}: redirect status must be 301, 302, 303, 307 or 308"),
                );
                return None;
            }
            Some(s) => *s.get_ref(),
            None => 302,
        };
        let to = match (&r.location, &r.prefix, &r.scheme) {
            (Some(l), None, None) => RedirectTo::Location(l.clone()),
            (None, Some(p), None) => RedirectTo::Prefix {
                prefix: p.trim_end_matches('/').to_string(),
                drop_query: r.drop_query,
            },
            (None, None, Some(s)) => {
                if s.is_empty()
                    || !s
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
                {
                    self.err(rd, format!("{ctx}: \"{s}\" is not a URL scheme"));
                    return None;
                }
                RedirectTo::Scheme {
                    scheme: s.to_ascii_lowercase(),
                    drop_query: r.drop_query,
                }
            }
            _ => {
                self.err(
                    rd,
                    format!("{ctx}: redirect needs exactly one of location, prefix, scheme"),
                );
                return None;
            }
        };
        let text = match &to {
            RedirectTo::Location(l) => l.as_str(),
            RedirectTo::Prefix { prefix, .. } => prefix.as_str(),
            RedirectTo::Scheme { .. } => "",
        };
        if !is_field_value(text) || text.contains([' ', '\t']) {
            self.err(
                rd,
                format!("{ctx}: the redirect target may not hold spaces or control characters"),
            );
            return None;
        }
        Some(Action::Redirect { status, to })
    }

    /// The attributes of an inserted persistence cookie, as written after
    /// `NAME=VALUE`.
    fn cookie_attrs(
        &mut self,
        ctx: &str,
        p: &Spanned<PersistFile>,
        mode: CookieMode,
    ) -> Option<String> {
        use std::fmt::Write as _;
        let f = p.get_ref();
        let set = f.secure
            || f.httponly
            || f.samesite.is_some()
            || f.domain.is_some()
            || f.max_age.is_some();
        if mode == CookieMode::Prefix && set {
            self.err(
                p,
                format!("{ctx}: secure, httponly, samesite, domain and max_age go with mode \"insert\" only (in prefix mode the application's cookie keeps its own)"),
            );
            return None;
        }
        let mut attrs = String::from("; Path=/");
        if let Some(d) = &f.domain {
            let v = d.get_ref();
            if v.is_empty()
                || !v
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
            {
                self.err(d, format!("{ctx}: \"{v}\" is not a cookie domain"));
                return None;
            }
            let _ = write!(attrs, "; Domain={v}");
        }
        if let Some(m) = f.max_age {
            let _ = write!(attrs, "; Max-Age={}", m.as_secs());
        }
        if f.secure {
            attrs.push_str("; Secure");
        }
        if f.httponly {
            attrs.push_str("; HttpOnly");
        }
        if let Some(s) = &f.samesite {
            let v = match s.get_ref().to_ascii_lowercase().as_str() {
                "strict" => "Strict",
                "lax" => "Lax",
                "none" if f.secure => "None",
                "none" => {
                    self.err(s, format!("{ctx}: samesite = \"none\" needs secure = true (browsers drop the cookie otherwise)"));
                    return None;
                }
                other => {
                    self.err(s, format!("{ctx}: samesite must be \"strict\", \"lax\" or \"none\", not \"{other}\""));
                    return None;
                }
            };
            let _ = write!(attrs, "; SameSite={v}");
        }
        Some(attrs)
    }

    pub(super) fn persist(&mut self, ctx: &str, p: &Spanned<PersistFile>) -> Option<Persist> {
        let f = p.get_ref();
        match (&f.cookie, f.source) {
            (Some(name), false) => {
                if !is_token(name.get_ref()) {
                    self.err(
                        name,
                        format!("{ctx}: \"{}\" is not a cookie name", name.get_ref()),
                    );
                }
                let mode = match f.mode.as_ref().map(|m| m.get_ref().as_str()) {
                    None | Some("insert") => CookieMode::Insert,
                    Some("prefix") => CookieMode::Prefix,
                    Some(other) => {
                        if let Some(m) = &f.mode {
                            self.err(m, format!("{ctx}: persist mode \"{other}\" is not \"insert\" or \"prefix\""));
                        }
                        return None;
                    }
                };
                if mode == CookieMode::Prefix && (f.indirect || f.nocache) {
                    self.err(
                        p,
                        format!("{ctx}: indirect and nocache go with mode \"insert\" only"),
                    );
                }
                if f.expire.is_some() || f.size.is_some() {
                    self.err(
                        p,
                        format!("{ctx}: expire and size go with source persistence only"),
                    );
                }
                let attrs = self.cookie_attrs(ctx, p, mode)?;
                Some(Persist::Cookie {
                    name: name.get_ref().clone(),
                    mode,
                    indirect: f.indirect,
                    nocache: f.nocache,
                    attrs,
                })
            }
            (None, true) => {
                if f.mode.is_some() || f.indirect || f.nocache {
                    self.err(
                        p,
                        format!(
                            "{ctx}: mode, indirect and nocache go with cookie persistence only"
                        ),
                    );
                }
                let size = match &f.size {
                    Some(s) if *s.get_ref() == 0 => {
                        self.err(s, format!("{ctx}: size must be at least 1"));
                        1
                    }
                    Some(s) => *s.get_ref(),
                    None => SOURCE_SIZE,
                };
                Some(Persist::Source {
                    expire: f.expire.unwrap_or(SOURCE_EXPIRE),
                    size,
                })
            }
            _ => {
                self.err(
                    p,
                    format!("{ctx}: persist needs one of cookie = \"NAME\" or source = true"),
                );
                None
            }
        }
    }
}
