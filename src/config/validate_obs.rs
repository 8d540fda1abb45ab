//! Validation of `[stats]` (the stats page) and `[log]` (the access log).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use toml::Spanned;

use super::file::{AdminFile, AuthFile, LogFile, StatsFile};
use super::validate::Validator;
use super::{Admin, Auth, Log, Stats};
use super::{LogFormat as Format, LogTarget as Target};

impl Validator<'_> {
    pub(super) fn stats(&mut self, raw: &StatsFile) -> Stats {
        let mut st = Stats {
            histograms: raw.histograms.unwrap_or(true),
            admin: raw.admin.as_ref().is_some_and(|a| *a.get_ref()),
            ..Stats::default()
        };
        st.listen = raw.listen.as_ref().and_then(|l| {
            let addr = l.get_ref().parse::<SocketAddr>();
            if addr.is_err() {
                self.err(
                    l,
                    format!(
                        "[stats] listen: invalid address \"{}\" (expected IP:PORT, like \"127.0.0.1:8404\")",
                        l.get_ref()
                    ),
                );
            }
            addr.ok()
        });
        st.auth = raw.auth.as_ref().and_then(|a| self.auth(a));
        match (&raw.listen, st.listen) {
            (Some(at), Some(addr)) if !addr.ip().is_loopback() && st.auth.is_none() => {
                self.warn(
                    at,
                    format!(
                        "[stats] listen: {addr} is reachable from other hosts and the page has no auth{}",
                        if st.admin {
                            " (and admin = true lets anyone drain servers)"
                        } else {
                            ""
                        }
                    ),
                );
            }
            _ => {}
        }
        if let (Some(admin), None) = (&raw.admin, &raw.listen)
            && *admin.get_ref()
        {
            self.warn(admin, "[stats] admin = true does nothing without listen");
        }
        st
    }

    fn auth(&mut self, a: &Spanned<AuthFile>) -> Option<Auth> {
        let raw = a.get_ref();
        let user = raw.user.get_ref().clone();
        if user.is_empty() || user.contains(':') {
            self.err(
                &raw.user,
                "[stats] auth: user must not be empty or contain \":\"",
            );
            return None;
        }
        let password = match (&raw.password_file, &raw.password_env) {
            (Some(f), None) => {
                let full = self.relative(f.get_ref());
                match std::fs::read_to_string(&full) {
                    // One line: the trailing newline an editor adds is not part of it.
                    Ok(p) => p.trim_end_matches(['\r', '\n']).to_string(),
                    Err(e) => {
                        let msg = format!(
                            "[stats] auth: cannot read password_file \"{}\": {e}",
                            full.display()
                        );
                        self.err(f, msg);
                        return None;
                    }
                }
            }
            (None, Some(v)) => match std::env::var(v.get_ref()) {
                Ok(p) => p,
                Err(_) => {
                    let msg = format!(
                        "[stats] auth: environment variable {} is not set",
                        v.get_ref()
                    );
                    self.err(v, msg);
                    return None;
                }
            },
            _ => {
                self.err(
                    a,
                    "[stats] auth: give exactly one of password_file or password_env (a password is never written in the config)",
                );
                return None;
            }
        };
        if password.is_empty() {
            self.err(a, "[stats] auth: the password is empty");
            return None;
        }
        Some(Auth { user, password })
    }

    pub(super) fn log(&mut self, raw: &LogFile) -> Log {
        let mut log = Log {
            query: raw.query.unwrap_or(false),
            ..Log::default()
        };
        if let Some(a) = &raw.access {
            log.access = match a.get_ref().as_str() {
                "stdout" => Some(Target::Stdout),
                "off" => None,
                "" => {
                    self.err(
                        a,
                        "[log] access: expected \"stdout\", \"off\" or a file path",
                    );
                    None
                }
                path => Some(Target::File(self.relative(path))),
            };
        }
        if let Some(f) = &raw.format {
            log.format = match f.get_ref().as_str() {
                "text" => Format::Text,
                "json" => Format::Json,
                other => {
                    self.err(
                        f,
                        format!("[log] format: \"{other}\" is not \"text\" or \"json\""),
                    );
                    Format::Text
                }
            };
        }
        if let Some(r) = &raw.request_id {
            let name = r.get_ref();
            let token = !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
            if token {
                log.request_id = Some(name.to_ascii_lowercase());
            } else {
                self.err(
                    r,
                    format!("[log] request_id: \"{name}\" is not a header field name"),
                );
            }
        }
        log
    }

    pub(super) fn admin(&mut self, raw: &AdminFile) -> Admin {
        let mut a = Admin {
            socket: raw.socket.as_ref().map(|p| self.relative(p.get_ref())),
            mode: 0o600,
            group: raw.group.as_ref().map(|g| g.get_ref().clone()),
            read_only_socket: raw
                .read_only_socket
                .as_ref()
                .map(|p| self.relative(p.get_ref())),
            state_file: Some(PathBuf::from(format!("{}.state", self.file))),
        };
        if let Some(m) = &raw.mode {
            match u32::from_str_radix(m.get_ref().trim_start_matches("0o"), 8) {
                Ok(v) if v <= 0o777 => a.mode = v,
                _ => self.err(
                    m,
                    format!(
                        "[admin] mode: \"{}\" is not an octal file mode like \"0600\"",
                        m.get_ref()
                    ),
                ),
            }
        }
        if let Some(f) = &raw.state_file {
            a.state_file = match f.get_ref().as_str() {
                "off" => None,
                "" => {
                    self.err(f, "[admin] state_file: expected a file path or \"off\"");
                    None
                }
                p => Some(self.relative(p)),
            };
        }
        for (key, p) in [
            ("socket", &raw.socket),
            ("read_only_socket", &raw.read_only_socket),
        ] {
            if let Some(p) = p
                && p.get_ref().len() > 100
            {
                self.err(
                    p,
                    format!("[admin] {key}: a socket path is at most 100 bytes long"),
                );
            }
        }
        if a.socket.is_none()
            && (raw.mode.is_some() || raw.group.is_some() || raw.read_only_socket.is_some())
            && let Some(m) = raw
                .mode
                .as_ref()
                .or(raw.group.as_ref())
                .or(raw.read_only_socket.as_ref())
        {
            self.warn(m, "[admin] socket is not set: the admin socket is off");
        }
        a
    }

    /// A path relative to the config file's directory.
    pub(super) fn relative(&self, p: &str) -> PathBuf {
        Path::new(self.file)
            .parent()
            .unwrap_or(Path::new("."))
            .join(p)
    }
}
