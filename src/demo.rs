//! `fulcrum demo`: start one test origin per server of the demo config, then the
//! daemon in front of them, and print what to try.

use std::net::SocketAddr;

use crate::config::{self, Config, ConfigErrors};
use crate::origin::{self, OriginOpts};

/// The shipped demo config (also on disk as `config/demo.toml`).
pub const DEMO_TOML: &str = include_str!("../config/demo.toml");

/// Parse the demo config: the given file, or the built-in copy.
pub fn load(path: Option<&std::path::Path>) -> Result<Config, ConfigErrors> {
    match path {
        Some(p) => config::load(p),
        None => config::parse("config/demo.toml", DEMO_TOML),
    }
}

/// Start an HTTP origin named after each server, on that server's address.
pub async fn start_origins(cfg: &Config) -> std::io::Result<Vec<(String, SocketAddr)>> {
    let mut started = Vec::new();
    for b in &cfg.backends {
        for s in &b.servers {
            if started.iter().any(|(_, a)| *a == s.addr) {
                continue;
            }
            let o = origin::spawn(s.addr, OriginOpts::http(&s.name)).await?;
            started.push((s.name.clone(), o.addr));
        }
    }
    Ok(started)
}
