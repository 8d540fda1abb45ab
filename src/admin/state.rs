//! Durable runtime changes: what the admin socket changed, kept in a state
//! file beside the config (`[admin] state_file`, default `<config>.state`)
//! and applied again on top of the file at every start and reload.
//!
//! Precedence, per server:
//! - a server removed from the file drops its overrides (a server added at
//!   runtime whose backend is gone is dropped too);
//! - a weight or address changed in the file since the override was made
//!   wins: the override is dropped, with a log line (each override remembers
//!   the file's value when it was made);
//! - a server added at runtime that the file now defines is the file's;
//! - a drain or maintenance state stays until set back to ready (a state is
//!   an operation, not configuration: `write config` does not put it in the
//!   file).
//!
//! The file is JSON, written to a temporary file, synced and renamed over the
//! old one, so a crash leaves the old or the new file, never half of one. A
//! file that cannot be read or parsed is reported and ignored: it never stops
//! a start.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::{Config, ServerConfig};

/// One server's runtime changes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Override {
    pub backend: String,
    pub server: String,
    /// "drain" or "maint".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// The weight set, and the file's weight when it was set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_weight: Option<u32>,
    /// The address set, and the file's address when it was set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub addr: Option<SocketAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_addr: Option<SocketAddr>,
    /// Added at runtime (not in the file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub added: Option<Added>,
    /// Removed at runtime (still in the file).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deleted: bool,
    /// When the first of these changes was made (Unix seconds).
    pub since: u64,
}

/// A server added at runtime.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Added {
    pub addr: SocketAddr,
    pub weight: u32,
    #[serde(default)]
    pub backup: bool,
    /// Checked like the backend's other servers.
    #[serde(default)]
    pub check: bool,
}

/// Every override, as the state file holds them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Overrides {
    pub version: u32,
    pub servers: Vec<Override>,
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state file {path}: cannot read: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("state file {path}: not a fulcrum state file ({source}); ignored")]
    Parse {
        path: String,
        source: serde_json::Error,
    },
    #[error("state file {path}: cannot write: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
}

pub fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Overrides {
    /// Read `path`; a missing file is no overrides.
    pub fn load(path: &Path) -> Result<Overrides, StateError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Overrides::default()),
            Err(source) => {
                return Err(StateError::Read {
                    path: path.display().to_string(),
                    source,
                });
            }
        };
        serde_json::from_str(&text).map_err(|source| StateError::Parse {
            path: path.display().to_string(),
            source,
        })
    }

    /// The state file's format version.
    pub const VERSION: u32 = 1;

    /// Write atomically: a temporary file beside it, synced, renamed.
    pub fn save(&self, path: &Path) -> Result<(), StateError> {
        let err = |source| StateError::Write {
            path: path.display().to_string(),
            source,
        };
        let mut tmp = PathBuf::from(path);
        tmp.as_mut_os_string().push(".tmp");
        let mut this = self.clone();
        this.version = Self::VERSION;
        let text = serde_json::to_string_pretty(&this)
            .map_err(std::io::Error::other)
            .map_err(err)?;
        {
            use std::io::Write as _;
            let mut f = std::fs::File::create(&tmp).map_err(err)?;
            f.write_all(text.as_bytes()).map_err(err)?;
            f.write_all(b"\n").map_err(err)?;
            f.sync_all().map_err(err)?;
        }
        std::fs::rename(&tmp, path).map_err(err)?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            // The rename itself is durable once the directory is synced.
            if let Ok(d) = std::fs::File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(())
    }

    /// The entry of `backend/server`, created if missing.
    pub fn entry(&mut self, backend: &str, server: &str) -> &mut Override {
        let i = match self
            .servers
            .iter()
            .position(|o| o.backend == backend && o.server == server)
        {
            Some(i) => i,
            None => {
                self.servers.push(Override {
                    backend: backend.to_string(),
                    server: server.to_string(),
                    since: now_unix(),
                    ..Override::default()
                });
                self.servers.len() - 1
            }
        };
        &mut self.servers[i]
    }

    /// Drop entries that no longer change anything.
    pub fn prune(&mut self) {
        self.servers.retain(|o| {
            o.state.is_some()
                || o.weight.is_some()
                || o.addr.is_some()
                || o.added.is_some()
                || o.deleted
        });
    }

    /// Apply to a configuration just read from its file: add, remove and
    /// edit servers. Returns what was dropped and why (to be logged), and
    /// removes those overrides.
    pub fn apply(&mut self, cfg: &mut Config) -> Vec<String> {
        let mut notes = Vec::new();
        let checks: Vec<(String, Option<crate::config::health::HealthCheck>)> = cfg
            .backends
            .iter()
            .map(|b| {
                (
                    b.name.clone(),
                    b.servers.iter().find_map(|s| s.health.clone()),
                )
            })
            .collect();
        self.servers.retain_mut(|o| {
            let Some(b) = cfg.backends.iter_mut().find(|b| b.name == o.backend) else {
                notes.push(format!(
                    "{}/{}: backend gone from the file: runtime changes dropped",
                    o.backend, o.server
                ));
                return false;
            };
            let in_file = b.servers.iter().position(|s| s.name == o.server);
            if let Some(a) = &o.added {
                if in_file.is_some() {
                    notes.push(format!(
                        "{}/{}: now defined in the file: the server added at runtime is replaced by it",
                        o.backend, o.server
                    ));
                    return false;
                }
                let health = a
                    .check
                    .then(|| checks.iter().find(|(n, _)| *n == b.name))
                    .flatten()
                    .and_then(|(_, h)| h.clone());
                b.servers.push(ServerConfig {
                    name: o.server.clone(),
                    addr: a.addr,
                    weight: a.weight,
                    maxconn: None,
                    backup: a.backup,
                    send_proxy: None,
                    cookie: o.server.clone(),
                    health,
                    tls: b.tls.clone(),
                });
            } else if in_file.is_none() {
                notes.push(format!(
                    "{}/{}: gone from the file: runtime changes dropped",
                    o.backend, o.server
                ));
                return false;
            }
            if o.deleted {
                b.servers.retain(|s| s.name != o.server);
                return true;
            }
            let Some(s) = b.servers.iter_mut().find(|s| s.name == o.server) else {
                return false;
            };
            if let Some(w) = o.weight {
                if o.added.is_none() && o.file_weight.is_some_and(|f| f != s.weight) {
                    notes.push(format!(
                        "{}/{}: weight changed in the file ({} -> {}) since it was set to {w} at runtime: the file wins",
                        o.backend,
                        o.server,
                        o.file_weight.unwrap_or_default(),
                        s.weight
                    ));
                    o.weight = None;
                    o.file_weight = None;
                } else {
                    s.weight = w;
                }
            }
            if let Some(a) = o.addr {
                if o.added.is_none() && o.file_addr.is_some_and(|f| f != s.addr) {
                    notes.push(format!(
                        "{}/{}: address changed in the file since it was set to {a} at runtime: the file wins",
                        o.backend, o.server
                    ));
                    o.addr = None;
                    o.file_addr = None;
                } else {
                    s.addr = a;
                }
            }
            true
        });
        self.prune();
        notes
    }

    /// What the running state differs from the file by, one line each.
    pub fn diff(&self) -> Vec<String> {
        let mut out = Vec::new();
        for o in &self.servers {
            let name = format!("{}/{}", o.backend, o.server);
            let since = format!("since {}", stamp(o.since));
            if let Some(a) = &o.added {
                out.push(format!(
                    "+ {name}: added at {} weight {}{}{} ({since})",
                    a.addr,
                    a.weight,
                    if a.backup { " backup" } else { "" },
                    if a.check { " check" } else { "" }
                ));
            }
            if o.deleted {
                out.push(format!("- {name}: removed ({since})"));
            }
            if let Some(w) = o.weight.filter(|_| o.added.is_none()) {
                out.push(format!(
                    "~ {name}: weight {w} instead of {}",
                    o.file_weight.unwrap_or_default()
                ));
            }
            if let Some(a) = o.addr.filter(|_| o.added.is_none()) {
                let file = o.file_addr.map_or_else(String::new, |f| f.to_string());
                out.push(format!("~ {name}: address {a} instead of {file}"));
            }
            if let Some(st) = &o.state {
                out.push(format!("~ {name}: state {st} ({since})"));
            }
        }
        out
    }
}

/// Unix seconds as `YYYY-MM-DDTHH:MM:SSZ`.
fn stamp(secs: u64) -> String {
    let mut s = String::new();
    crate::stats::access::rfc3339(
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs),
        &mut s,
    );
    s.replace(".000Z", "Z")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(servers: &str) -> Config {
        let text = format!(
            "[[frontend]]\nname = \"f\"\nlisten = [\"127.0.0.1:0\"]\ndefault_backend = \"b\"\n\n[[backend]]\nname = \"b\"\nservers = [{servers}]\n"
        );
        crate::config::parse("t.toml", &text).unwrap()
    }

    #[test]
    fn overrides_apply_unless_the_file_changed_since() {
        let mut ov = Overrides::default();
        let e = ov.entry("b", "a");
        e.weight = Some(5);
        e.file_weight = Some(1);
        e.state = Some("drain".into());
        ov.entry("b", "n").added = Some(Added {
            addr: "127.0.0.1:9".parse().unwrap(),
            weight: 2,
            backup: false,
            check: false,
        });
        ov.entry("b", "gone").weight = Some(3);
        ov.entry("b", "c").deleted = true;

        let mut c = cfg(
            r#"{ name = "a", address = "127.0.0.1:1" }, { name = "c", address = "127.0.0.1:3" }"#,
        );
        let notes = ov.apply(&mut c);
        let names: Vec<_> = c.backends[0]
            .servers
            .iter()
            .map(|s| (s.name.as_str(), s.weight))
            .collect();
        assert_eq!(names, [("a", 5), ("n", 2)]);
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert!(notes[0].contains("b/gone: gone from the file"));
        assert_eq!(ov.servers.len(), 3);

        // The file's weight changed since: the file wins, the state stays.
        let mut c = cfg(
            r#"{ name = "a", address = "127.0.0.1:1", weight = 7 }, { name = "n", address = "127.0.0.1:4" }"#,
        );
        let notes = ov.apply(&mut c);
        assert_eq!(c.backends[0].servers[0].weight, 7);
        assert!(
            notes
                .iter()
                .any(|n| n.contains("weight changed in the file (1 -> 7)")),
            "{notes:?}"
        );
        assert!(
            notes
                .iter()
                .any(|n| n.contains("b/n: now defined in the file")),
            "{notes:?}"
        );
        assert_eq!(c.backends[0].servers[1].addr.port(), 4, "the file's n");
        let a = ov.servers.iter().find(|o| o.server == "a").unwrap();
        assert_eq!((a.weight, a.state.as_deref()), (None, Some("drain")));
        let diff = ov.diff();
        assert!(
            diff.iter()
                .any(|d| d.starts_with("~ b/a: state drain (since ")),
            "{diff:?}"
        );
        assert!(
            ov.servers.iter().all(|o| o.server != "c"),
            "c left the file: its removal is moot"
        );
    }

    #[test]
    fn the_file_round_trips_and_a_bad_one_is_an_error_not_a_panic() {
        let dir = std::env::temp_dir().join(format!("fulcrum-state-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("f.toml.state");
        assert_eq!(Overrides::load(&p).unwrap(), Overrides::default());
        let mut ov = Overrides::default();
        ov.entry("b", "a").state = Some("maint".into());
        ov.save(&p).unwrap();
        ov.version = Overrides::VERSION;
        assert_eq!(Overrides::load(&p).unwrap(), ov);
        std::fs::write(&p, "{ not json").unwrap();
        assert!(matches!(Overrides::load(&p), Err(StateError::Parse { .. })));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
