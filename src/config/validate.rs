//! From the raw file to a validated `Config`: defaults, ranges, cross-checks.
//! Every problem is collected (not only the first) with its line and column.

use std::collections::HashMap;
use std::net::{SocketAddr, ToSocketAddrs};

use toml::Spanned;

use super::error::{ConfigError, ConfigErrors, Locator, nearest};
use super::file::{
    BackendFile, BalanceFile, BalanceTable, FileConfig, FrontendFile, Mode, ServerFile,
};
use super::routing::PathOptions;
use super::{
    Algorithm, Backend, BackendTimeouts, Config, Frontend, FrontendTimeouts, Global, ServerConfig,
    UriKey, defaults,
};

pub fn validate(file: &str, text: &str) -> Result<Config, ConfigErrors> {
    let loc = Locator::new(file, text);
    let raw: FileConfig = match toml::from_str(text) {
        Ok(raw) => raw,
        Err(e) => return Err(ConfigErrors(parse_errors(&loc, text, e))),
    };
    let mut v = Validator {
        loc,
        file,
        errors: Vec::new(),
        warnings: Vec::new(),
    };
    let cfg = v.config(file, raw);
    if v.errors.is_empty() {
        Ok(cfg)
    } else {
        v.errors.sort_by_key(|e| (e.line, e.col));
        Err(ConfigErrors(v.errors))
    }
}

/// Most parse-level errors reported for one file.
const MAX_PARSE_ERRORS: usize = 20;

/// The first parse error, and as many more as can be found. Each top-level
/// section (`[global]`, each `[[frontend]]`, each `[[backend]]`) is parsed on
/// its own (the others commented out, so offsets stay true); within one, the
/// line of each error (a whole `key = value` line) is commented out and the
/// text parsed again, until it parses, an error is not on such a line, or a
/// key that was commented out is reported missing.
fn parse_errors(loc: &Locator<'_>, text: &str, first: toml::de::Error) -> Vec<ConfigError> {
    let mut errors = vec![loc.error(first.span(), friendly(first.message(), text, first.span()))];
    for section in sections(text) {
        let mut work = isolate(text, &section);
        let mut commented = false;
        while errors.len() < MAX_PARSE_ERRORS {
            let e = match toml::from_str::<FileConfig>(&work) {
                Ok(_) => break,
                Err(e) => e,
            };
            let Some(span) = e.span().filter(|s| section.contains(&s.start)) else {
                break;
            };
            if commented && e.message().starts_with("missing field") {
                break;
            }
            let err = loc.error(
                Some(span.clone()),
                friendly(e.message(), text, Some(span.clone())),
            );
            if !errors
                .iter()
                .any(|x| (x.line, x.col) == (err.line, err.col))
            {
                errors.push(err);
            }
            if !comment_out_line(&mut work, span.start) {
                break;
            }
            commented = true;
        }
    }
    errors.sort_by_key(|e| (e.line, e.col));
    errors
}

/// Byte ranges of the top-level sections: the keys before the first table,
/// then each `[global]`, `[[frontend]]` or `[[backend]]` with its sub-tables.
fn sections(text: &str) -> Vec<std::ops::Range<usize>> {
    let mut starts = vec![0];
    let mut at = 0;
    for line in text.split_inclusive('\n') {
        let t = line.trim_start();
        if t.starts_with('[') {
            let name = t.trim_start_matches('[').trim_start();
            let first = name
                .split(|c: char| c == '.' || c == ']' || c.is_whitespace())
                .next()
                .unwrap_or("");
            if matches!(first, "global" | "frontend" | "backend") && !name.contains('.') {
                starts.push(at);
            }
        }
        at += line.len();
    }
    starts.push(text.len());
    starts.dedup();
    starts.windows(2).map(|w| w[0]..w[1]).collect()
}

/// `text` with every line outside `keep` commented out.
fn isolate(text: &str, keep: &std::ops::Range<usize>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for line in text.split_inclusive('\n') {
        let inside = keep.contains(&at);
        let t = line.trim_start();
        if inside || t.trim().is_empty() || t.starts_with('#') {
            out.push_str(line);
        } else {
            let indent = line.len() - t.len();
            out.push_str(&line[..indent]);
            // '#' and padding in place of the first character: same length.
            let first = t.chars().next().map_or(0, char::len_utf8);
            out.push('#');
            out.extend(std::iter::repeat_n(' ', first.saturating_sub(1)));
            out.push_str(&t[first..]);
        }
        at += line.len();
    }
    out
}

/// Comment out the line holding `offset` if it is a whole `key = value` line
/// (its brackets and quotes closed on it). Same length, so offsets stay true.
fn comment_out_line(text: &mut String, offset: usize) -> bool {
    let start = text[..offset.min(text.len())]
        .rfind('\n')
        .map_or(0, |i| i + 1);
    let end = text[start..].find('\n').map_or(text.len(), |i| start + i);
    let line = &text[start..end];
    let trimmed = line.trim_start();
    let is_key_line = trimmed.split_once('=').is_some_and(|(k, _)| {
        let k = k.trim();
        !k.is_empty()
            && k.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_-.\"' ".contains(&b))
    });
    let balanced =
        |open: char, close: char| trimmed.matches(open).count() == trimmed.matches(close).count();
    if !is_key_line || !balanced('[', ']') || !balanced('{', '}') || trimmed.starts_with('#') {
        return false;
    }
    let indent = line.len() - trimmed.len();
    text.replace_range(start + indent..start + indent + 1, "#");
    true
}

/// The key whose value starts at (or contains) `offset`, from its line.
fn key_at(text: &str, offset: usize) -> Option<&str> {
    let offset = offset.min(text.len());
    let start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
    let before = &text[start..offset];
    let (k, _) = before.rsplit_once('=')?;
    let k = k
        .rsplit(['{', ',', ' '])
        .find(|p| !p.trim().is_empty())?
        .trim();
    Some(k.rsplit('.').next().unwrap_or(k).trim_matches('"'))
}

/// Serde's names of types, in words.
fn type_in_words(t: &str, key: Option<&str>) -> String {
    match (t, key) {
        ("a sequence", Some("listen")) => {
            "a list of addresses, like [\"127.0.0.1:8080\"]".to_string()
        }
        ("a sequence", Some("servers")) => {
            "a list of servers, like [{ name = \"a\", address = \"127.0.0.1:9001\" }]".to_string()
        }
        ("a sequence", _) => "a list".to_string(),
        ("usize" | "u64" | "u32", _) => "a whole number (0 or more)".to_string(),
        ("u16", _) => "a whole number from 0 to 65535".to_string(),
        ("u8", _) => "a whole number from 0 to 255".to_string(),
        ("i64" | "i32", _) => "an integer".to_string(),
        ("f64" | "f32", _) => "a number".to_string(),
        ("a map", _) => "a table".to_string(),
        (t, _) if t.starts_with("struct ") => "a table".to_string(),
        (t, _) => t.to_string(),
    }
}

/// Rewrite serde's wording into ours: "unknown key" with the nearest known key,
/// types in words.
pub(super) fn friendly(msg: &str, text: &str, span: Option<std::ops::Range<usize>>) -> String {
    let msg = msg.trim_end();
    let key = span.and_then(|s| key_at(text, s.start));
    for prefix in ["invalid type: ", "invalid value: "] {
        if let Some(rest) = msg.strip_prefix(prefix)
            && let Some((found, expected)) = rest.rsplit_once(", expected ")
        {
            let found = found.replace('`', "");
            let what = key.map(|k| format!(" for \"{k}\"")).unwrap_or_default();
            return format!(
                "expected {}{what}, found {}",
                type_in_words(expected, key),
                found
            );
        }
    }
    for (prefix, what) in [("unknown field `", "key"), ("unknown variant `", "value")] {
        if let Some(rest) = msg.strip_prefix(prefix) {
            let Some(end) = rest.find('`') else { break };
            let word = &rest[..end];
            let known: Vec<&str> = rest[end + 1..].split('`').skip(1).step_by(2).collect();
            let list = known
                .iter()
                .map(|k| format!("\"{k}\""))
                .collect::<Vec<_>>()
                .join(", ");
            return match nearest(word, known.iter().copied()) {
                Some(hint) => format!("unknown {what} \"{word}\" (did you mean \"{hint}\"?)"),
                None if known.is_empty() => format!("unknown {what} \"{word}\""),
                None => format!("unknown {what} \"{word}\" (expected one of {list})"),
            };
        }
    }
    if let Some(field) = msg
        .strip_prefix("missing field `")
        .and_then(|r| r.strip_suffix('`'))
    {
        return format!("missing required key \"{field}\"");
    }
    msg.replace('`', "\"")
}

pub(super) struct Validator<'a> {
    pub(super) loc: Locator<'a>,
    /// The config file's path (error files are relative to it).
    pub(super) file: &'a str,
    pub(super) errors: Vec<ConfigError>,
    pub(super) warnings: Vec<ConfigError>,
}

impl Validator<'_> {
    pub(super) fn err<T>(&mut self, at: &Spanned<T>, msg: impl Into<String>) {
        let e = self.loc.error(Some(at.span()), msg);
        self.errors.push(e);
    }

    /// Something allowed but probably not meant: `check` and `run` print it.
    pub(super) fn warn<T>(&mut self, at: &Spanned<T>, msg: impl Into<String>) {
        let e = self.loc.error(Some(at.span()), msg);
        self.warnings.push(e);
    }

    fn config(&mut self, file: &str, raw: FileConfig) -> Config {
        let g = &raw.global;
        let threads = match &g.threads {
            Some(t) if *t.get_ref() == 0 || *t.get_ref() > 256 => {
                self.err(t, "threads must be between 1 and 256");
                1
            }
            Some(t) => *t.get_ref(),
            None => std::thread::available_parallelism().map_or(1, |n| n.get()),
        };
        let maxconn = g.maxconn.as_ref().map(|m| self.positive(m, "maxconn"));
        let log_level = match &g.log_level {
            Some(l) => {
                if tracing_subscriber::EnvFilter::try_new(l.get_ref()).is_err() {
                    self.err(l, format!("invalid log_level \"{}\"", l.get_ref()));
                }
                l.get_ref().clone()
            }
            None => defaults::LOG_LEVEL.to_string(),
        };
        let global = Global {
            threads,
            threading: g.threading.unwrap_or_default(),
            maxconn,
            log_level,
            splice: g.splice.unwrap_or(true),
            grace: g.grace.unwrap_or(defaults::GRACE),
            idle_park_after: Some(g.idle_park_after.unwrap_or(defaults::IDLE_PARK_AFTER))
                .filter(|d| !d.is_zero()),
        };

        if let Some(lc) = &g.log_connections {
            self.warn(
                lc,
                "log_connections is replaced by the access log ([log] access, on by default); it is ignored",
            );
        }
        let stats = self.stats(&raw.stats);
        let log = self.log(&raw.log);
        let admin = self.admin(&raw.admin);
        let backends: Vec<Backend> = raw.backend.iter().map(|b| self.backend(b)).collect();
        let mut seen: HashMap<&str, ()> = HashMap::new();
        for b in &raw.backend {
            if seen.insert(b.name.get_ref(), ()).is_some() {
                self.err(
                    &b.name,
                    format!("duplicate backend name \"{}\"", b.name.get_ref()),
                );
            }
        }
        let names: Vec<&str> = raw
            .backend
            .iter()
            .map(|b| b.name.get_ref().as_str())
            .collect();
        let needs_http: Vec<Option<String>> = backends
            .iter()
            .map(|b| {
                if b.algorithm.needs_http() {
                    Some(format!(
                        "balances by \"{}\", which needs an HTTP request",
                        b.algorithm.name()
                    ))
                } else if matches!(b.persist, Some(super::routing::Persist::Cookie { .. })) {
                    Some("persists by cookie, which needs HTTP".to_string())
                } else {
                    None
                }
            })
            .collect();
        let mut frontends = Vec::new();
        let mut seen_fe: HashMap<&str, ()> = HashMap::new();
        let mut bound: Vec<(SocketAddr, String)> = Vec::new();
        for f in &raw.frontend {
            if seen_fe.insert(f.name.get_ref(), ()).is_some() {
                self.err(
                    &f.name,
                    format!("duplicate frontend name \"{}\"", f.name.get_ref()),
                );
            }
            if let Some((fe, refs)) = self.frontend(f, &names, &mut bound) {
                for r in refs {
                    let mode_name = |m: Mode| match m {
                        Mode::Tcp => "tcp",
                        Mode::Http => "http",
                    };
                    if let Some(m) = backends[r.backend].mode
                        && m != fe.mode
                    {
                        let msg = format!(
                            "frontend \"{}\" is mode \"{}\", but backend \"{}\" is mode \"{}\"",
                            fe.name,
                            mode_name(fe.mode),
                            names[r.backend],
                            mode_name(m)
                        );
                        let e = self.loc.error(Some(r.span), msg);
                        self.errors.push(e);
                    } else if fe.mode == Mode::Tcp
                        && let Some(Some(why)) = needs_http.get(r.backend)
                    {
                        let msg = format!(
                            "frontend \"{}\" is mode \"tcp\", but backend \"{}\" {why}",
                            fe.name, names[r.backend]
                        );
                        let e = self.loc.error(Some(r.span), msg);
                        self.errors.push(e);
                    }
                }
                frontends.push(fe);
            }
        }
        if raw.frontend.is_empty() {
            self.errors.push(
                self.loc
                    .error(None, "no [[frontend]]: nothing would listen"),
            );
        }
        Config {
            file: file.to_string(),
            global,
            stats,
            log,
            admin,
            frontends,
            backends,
            warnings: std::mem::take(&mut self.warnings),
        }
    }

    pub(super) fn positive(&mut self, v: &Spanned<u32>, what: &str) -> u32 {
        if *v.get_ref() == 0 {
            self.err(v, format!("{what} must be at least 1"));
        }
        *v.get_ref()
    }

    fn frontend(
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

    fn backend(&mut self, b: &BackendFile) -> Backend {
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

/// Two listen addresses collide when they share a port (not 0, which the kernel
/// picks) and either is the same IP or a wildcard of the same family.
fn conflicts(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() != 0
        && a.port() == b.port()
        && a.is_ipv4() == b.is_ipv4()
        && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: &str = r#"
[[frontend]]
name = "web"
listen = ["127.0.0.1:0", "[::1]:0"]
default_backend = "app"
timeouts = { client = "2s" }

[[backend]]
name = "app"
timeouts = { connect = "150ms" }
servers = [{ name = "a", address = "127.0.0.1:9001", weight = 3 }]
"#;

    fn errors(text: &str) -> Vec<String> {
        validate("t.toml", text)
            .unwrap_err()
            .0
            .into_iter()
            .map(|e| e.to_string())
            .collect()
    }

    #[test]
    fn a_valid_file_gets_defaults() {
        let c = validate("t.toml", OK).unwrap();
        let f = &c.frontends[0];
        assert_eq!(f.listen.len(), 2);
        assert_eq!(f.timeouts.client.as_secs(), 2);
        assert_eq!(f.mode, Mode::Tcp);
        let b = &c.backends[0];
        assert_eq!(b.timeouts.connect.as_millis(), 150);
        assert_eq!(b.timeouts.server, defaults::SERVER_TIMEOUT);
        assert_eq!(b.retries, defaults::RETRIES);
        assert_eq!(b.servers[0].weight, 3);
    }

    #[test]
    fn unknown_key_suggests_nearest() {
        let e = errors(&OK.replace("default_backend", "default_backnd"));
        assert_eq!(
            e,
            ["t.toml:5:1: unknown key \"default_backnd\" (did you mean \"default_backend\"?)"]
        );
    }

    #[test]
    fn cross_checks_are_all_reported() {
        let text = r#"
[[frontend]]
name = "a"
listen = ["127.0.0.1:80"]
default_backend = "ap"

[[frontend]]
name = "a"
listen = ["0.0.0.0:80"]
default_backend = "app"

[[backend]]
name = "app"
servers = [{ name = "x", address = "127.0.0.1:1", weight = 300 }, { name = "x", address = "nope" }]
"#;
        let e = errors(text);
        assert_eq!(
            e,
            [
                "t.toml:5:19: frontend \"a\": default_backend \"ap\" is not a defined backend (did you mean \"app\"?)",
                "t.toml:8:8: duplicate frontend name \"a\"",
                "t.toml:9:11: frontend \"a\": address 0.0.0.0:80 is already used by frontend \"a\"",
                "t.toml:14:60: backend \"app\": server \"x\": weight 300 is out of range 0..=256",
                "t.toml:14:76: backend \"app\": duplicate server name \"x\"",
                "t.toml:14:91: backend \"app\": server \"x\": invalid address \"nope\" (expected HOST:PORT, like \"127.0.0.1:9001\")",
            ]
        );
    }

    #[test]
    fn bad_duration_points_at_the_value() {
        let e = errors(&OK.replace("\"150ms\"", "\"150 ms\""));
        assert_eq!(e.len(), 1);
        assert!(e[0].starts_with("t.toml:10:24:"), "{e:?}");
        assert!(e[0].contains("unknown unit"), "{e:?}");
    }
}
