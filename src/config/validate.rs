//! From the raw file to a validated `Config`: defaults, ranges, cross-checks.
//! Every problem is collected (not only the first) with its line and column.

use std::collections::HashMap;
use std::net::SocketAddr;

use toml::Spanned;

use super::error::{ConfigError, ConfigErrors, Locator, nearest};
use super::file::{FileConfig, Mode};
use super::{Backend, Config, Global, defaults};

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
}

/// Two listen addresses collide when they share a port (not 0, which the kernel
/// picks) and either is the same IP or a wildcard of the same family.
pub(super) fn conflicts(a: SocketAddr, b: SocketAddr) -> bool {
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
