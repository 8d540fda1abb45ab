//! Typed config builders: a test says what it needs (a frontend, a backend with
//! its servers, a few keys) and gets the TOML text the daemon parses, so every
//! test config still goes through the real parser and its checks.
//!
//! ```ignore
//! let d = Conf::new()
//!     .frontend(Frontend::http("web").to("app").timeouts([("client", "5s")]))
//!     .backend(Backend::new("app").server("a", origin.addr).set("retries", 1))
//!     .start();
//! ```

use std::net::SocketAddr;

use fulcrum::daemon::Running;
use toml::{Table, Value};

/// A whole config file: `[global]` (one thread unless set), frontends,
/// backends and the other top-level sections (`[stats]`, `[admin]`, `[log]`).
#[derive(Clone, Debug)]
pub struct Conf {
    doc: Table,
}

impl Default for Conf {
    fn default() -> Self {
        Conf::new()
    }
}

impl Conf {
    /// `[global] threads = 1` and nothing else.
    pub fn new() -> Conf {
        let mut doc = Table::new();
        doc.insert("global".into(), Value::Table(table([("threads", 1)])));
        Conf { doc }
    }

    /// A `[global]` key.
    pub fn global(self, key: &str, value: impl Into<Value>) -> Conf {
        self.section("global", key, value)
    }

    /// A key of a top-level table section (`[stats]`, `[admin]`, `[log]`, ...).
    pub fn section(mut self, section: &str, key: &str, value: impl Into<Value>) -> Conf {
        let t = self
            .doc
            .entry(section)
            .or_insert_with(|| Value::Table(Table::new()));
        if let Value::Table(t) = t {
            t.insert(key.into(), value.into());
        }
        self
    }

    pub fn frontend(self, f: Frontend) -> Conf {
        self.push("frontend", f.0)
    }

    pub fn backend(self, b: Backend) -> Conf {
        self.push("backend", b.0)
    }

    fn push(mut self, kind: &str, t: Table) -> Conf {
        let list = self
            .doc
            .entry(kind)
            .or_insert_with(|| Value::Array(Vec::new()));
        if let Value::Array(a) = list {
            a.push(Value::Table(t));
        }
        self
    }

    /// The config file's text.
    pub fn text(&self) -> String {
        toml::to_string(&self.doc).expect("a config renders as TOML")
    }

    /// Start the daemon in-process on this config (as file `test.toml`).
    pub fn start(&self) -> Running {
        crate::start(&self.text(), &[])
    }

    /// Start it as file `path` (relative paths in it, such as the admin
    /// socket's or certificates', are relative to that file's directory).
    pub fn start_as(&self, path: &std::path::Path) -> Running {
        let text = self.text();
        std::fs::write(path, &text).expect("the config file is written");
        crate::start_named(path.to_str().expect("a UTF-8 path"), &text)
    }
}

/// One `[[frontend]]`, listening on 127.0.0.1:0.
#[derive(Clone, Debug)]
pub struct Frontend(Table);

impl Frontend {
    fn new(name: &str, mode: &str) -> Frontend {
        Frontend(table([
            ("name", Value::from(name)),
            ("listen", Value::Array(vec!["127.0.0.1:0".into()])),
            ("mode", Value::from(mode)),
        ]))
    }

    /// A `mode = "http"` frontend.
    pub fn http(name: &str) -> Frontend {
        Frontend::new(name, "http")
    }

    /// The frontend most HTTP tests use: `web`, http, to backend `app`.
    pub fn web() -> Frontend {
        Frontend::http("web").to("app")
    }

    /// A `mode = "tcp"` frontend.
    pub fn tcp(name: &str) -> Frontend {
        Frontend::new(name, "tcp")
    }

    /// `default_backend`.
    pub fn to(self, backend: &str) -> Frontend {
        self.set("default_backend", backend)
    }

    /// Its `timeouts` table.
    pub fn timeouts<const N: usize>(self, t: [(&str, &str); N]) -> Frontend {
        self.set("timeouts", table(t))
    }

    /// Any other key.
    pub fn set(mut self, key: &str, value: impl Into<Value>) -> Frontend {
        self.0.insert(key.into(), value.into());
        self
    }
}

/// One `[[backend]]` and its servers.
#[derive(Clone, Debug)]
pub struct Backend(Table);

impl Backend {
    pub fn new(name: &str) -> Backend {
        Backend(table([
            ("name", Value::from(name)),
            ("servers", Value::Array(Vec::new())),
        ]))
    }

    /// The backend most HTTP tests use: `app`, one server `a` at `addr`.
    pub fn app(addr: SocketAddr) -> Backend {
        Backend::new("app").server("a", addr)
    }

    /// A server `{ name, address }`.
    pub fn server(self, name: &str, addr: SocketAddr) -> Backend {
        self.server_with(name, addr, Table::new())
    }

    /// A server with more keys (`weight`, `backup`, `health`, ...).
    pub fn server_with(mut self, name: &str, addr: SocketAddr, more: Table) -> Backend {
        let mut s = table([("name", name), ("address", &addr.to_string())]);
        s.extend(more);
        if let Some(Value::Array(list)) = self.0.get_mut("servers") {
            list.push(Value::Table(s));
        }
        self
    }

    /// One server per origin, named as the origin is.
    pub fn origins(self, origins: &[crate::Origin]) -> Backend {
        origins.iter().fold(self, |b, o| b.server(o.name, o.addr))
    }

    /// One server per address, named `s0`, `s1`, ...
    pub fn servers(self, addrs: &[SocketAddr]) -> Backend {
        addrs
            .iter()
            .enumerate()
            .fold(self, |b, (i, a)| b.server(&format!("s{i}"), *a))
    }

    /// Its `timeouts` table.
    pub fn timeouts<const N: usize>(self, t: [(&str, &str); N]) -> Backend {
        self.set("timeouts", table(t))
    }

    /// Any other key.
    pub fn set(mut self, key: &str, value: impl Into<Value>) -> Backend {
        self.0.insert(key.into(), value.into());
        self
    }
}

/// A TOML table from pairs (for nested values: `timeouts`, `health`, a
/// server's extra keys).
pub fn table<K: Into<String>, V: Into<Value>, const N: usize>(pairs: [(K, V); N]) -> Table {
    pairs
        .into_iter()
        .map(|(k, v)| (k.into(), v.into()))
        .collect()
}

/// A TOML value written inline (`{ old = { path_prefix = "/old/" } }`,
/// `[{ deny = 403, if = "bad" }]`): for rules and ACLs, whose TOML is clearer
/// than a builder.
pub fn value(text: &str) -> Value {
    let mut t: Table = format!("v = {text}")
        .parse()
        .unwrap_or_else(|e| panic!("not a TOML value: {text}: {e}"));
    t.remove("v").expect("the parsed value")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_built_config_is_the_toml_it_stands_for() {
        let a: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let c = Conf::new()
            .frontend(Frontend::http("web").to("app").timeouts([("client", "5s")]))
            .backend(Backend::new("app").server("a", a).set("retries", 1));
        let got: Table = c.text().parse().unwrap();
        let want: Table = r#"
            [global]
            threads = 1
            [[frontend]]
            name = "web"
            listen = ["127.0.0.1:0"]
            mode = "http"
            default_backend = "app"
            timeouts = { client = "5s" }
            [[backend]]
            name = "app"
            retries = 1
            servers = [{ name = "a", address = "127.0.0.1:9" }]
        "#
        .parse()
        .unwrap();
        assert_eq!(got, want);
        fulcrum::config::parse("t.toml", &c.text()).unwrap();
    }
}
