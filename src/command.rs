//! The typed commands that read and steer a running daemon: the admin socket,
//! the stats page's buttons and the tests all go through `execute`, never
//! through the snapshot's internals.
//!
//! What changes only live state (a server's status) is one atomic store; what
//! changes the shape of a backend (weights, membership) or the whole
//! configuration builds a new snapshot from an edited copy of the config and
//! swaps it in (`Shared::replace`), carrying every server's live state over by
//! name: the next pick sees the change, connections in flight finish on the
//! snapshot they began with.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::config::{Config, ServerConfig};
use crate::runtime::Shared;
use crate::server::Admin;
use crate::stats::{ServerStats, Snapshot};

/// An administrative state, as an operator sets it (HAProxy's `set server
/// state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminState {
    /// Takes traffic (as far as its health allows).
    Ready,
    /// Keeps its persistent users and open connections, takes no new ones.
    Drain,
    /// Takes nothing; persistence to it is ignored.
    Maint,
}

/// One command.
#[derive(Debug, Clone)]
pub enum Command {
    /// Every counter.
    ShowStat,
    /// Servers and their state, of one backend or all.
    ShowServers {
        backend: Option<String>,
    },
    SetState {
        backend: String,
        server: String,
        state: AdminState,
    },
    /// Mark a server up or down, as a health check would.
    SetHealth {
        backend: String,
        server: String,
        up: bool,
    },
    /// 0..=256; the balancer's tables are rebuilt.
    SetWeight {
        backend: String,
        server: String,
        weight: u32,
    },
    /// Move a server (port 0 keeps its port); its live state starts anew.
    SetAddr {
        backend: String,
        server: String,
        addr: SocketAddr,
    },
    AddServer(NewServer),
    /// Refused unless the server is in maintenance (or draining) with no
    /// connection open.
    DelServer {
        backend: String,
        server: String,
    },
    /// Swap in a new, already validated configuration.
    Reload(Box<Config>),
}

/// A server added at runtime.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewServer {
    pub backend: String,
    pub server: String,
    pub addr: SocketAddr,
    pub weight: u32,
    pub backup: bool,
    /// Checked like the backend's other servers.
    pub check: bool,
}

/// What a command answers.
#[derive(Debug, Clone)]
pub enum Reply {
    Done,
    Stats(Snapshot),
    /// (backend, server) pairs.
    Servers(Vec<(String, ServerStats)>),
    /// The generation of the snapshot now serving.
    Generation(u64),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    #[error("no backend \"{0}\"")]
    UnknownBackend(String),
    #[error("backend \"{backend}\" has no server \"{server}\"")]
    UnknownServer { backend: String, server: String },
    #[error("weight {0} is out of range 0..=256")]
    BadWeight(u32),
    #[error("backend \"{backend}\" already has a server \"{server}\"")]
    Exists { backend: String, server: String },
    #[error("backend \"{0}\" has no health check to give a new server")]
    NoCheck(String),
    #[error(
        "server \"{backend}/{server}\" is not removable: put it in maint (or drain it) and wait until its connections end ({open} open)"
    )]
    Busy {
        backend: String,
        server: String,
        open: u32,
    },
}

/// Run `cmd` against the daemon's shared state.
pub fn execute(shared: &Shared, cmd: Command) -> Result<Reply, CommandError> {
    match cmd {
        Command::ShowStat => Ok(Reply::Stats(shared.stats())),
        Command::ShowServers { backend } => show_servers(shared, backend.as_deref()),
        Command::SetState {
            backend,
            server,
            state,
        } => {
            let admin = match state {
                AdminState::Ready => Admin::Ready,
                AdminState::Drain => Admin::Drain,
                AdminState::Maint => Admin::Maint,
            };
            let rt = shared.snapshot();
            let s = find(&rt, &backend, &server)?;
            let before = s.state.set_admin(admin);
            tracing::info!(
                backend,
                server,
                from = before.as_str(),
                to = admin.as_str(),
                "server state set by command"
            );
            Ok(Reply::Done)
        }
        Command::SetHealth {
            backend,
            server,
            up,
        } => {
            let rt = shared.snapshot();
            let s = find(&rt, &backend, &server)?;
            if s.state.set_health(up) {
                let to = if up { "up" } else { "down" };
                tracing::info!(backend, server, to, "server health set by command");
            }
            Ok(Reply::Done)
        }
        Command::SetWeight {
            backend,
            server,
            weight,
        } => {
            if weight > crate::config::defaults::MAX_WEIGHT {
                return Err(CommandError::BadWeight(weight));
            }
            edit(shared, |cfg| {
                let s = server_mut(cfg, &backend, &server)?;
                s.weight = weight;
                Ok(())
            })
        }
        Command::SetAddr {
            backend,
            server,
            addr,
        } => edit(shared, |cfg| {
            let s = server_mut(cfg, &backend, &server)?;
            let port = if addr.port() == 0 {
                s.addr.port()
            } else {
                addr.port()
            };
            s.addr = SocketAddr::new(addr.ip(), port);
            tracing::info!(backend, server, addr = %s.addr, "server address set by command");
            Ok(())
        }),
        Command::AddServer(new) => add_server(shared, new),
        Command::DelServer { backend, server } => del_server(shared, &backend, &server),
        Command::Reload(cfg) => {
            let generation = shared.replace(Arc::new(*cfg));
            shared.global.reloads.inc();
            Ok(Reply::Generation(generation))
        }
    }
}

fn show_servers(shared: &Shared, backend: Option<&str>) -> Result<Reply, CommandError> {
    let rt = shared.snapshot();
    if let Some(b) = backend
        && rt.backend(b).is_none()
    {
        return Err(CommandError::UnknownBackend(b.to_string()));
    }
    let list = rt
        .backends
        .iter()
        .filter(|b| backend.is_none_or(|n| *n == *b.name))
        .flat_map(|b| b.all_servers().map(|s| (b.name.to_string(), s.snapshot())))
        .collect();
    Ok(Reply::Servers(list))
}

/// Server `backend/server` of snapshot `rt`.
fn find<'r>(
    rt: &'r crate::runtime::Runtime,
    backend: &str,
    server: &str,
) -> Result<&'r crate::server::Server, CommandError> {
    rt.backend(backend)
        .ok_or_else(|| CommandError::UnknownBackend(backend.to_string()))?
        .all_servers()
        .find(|s| &*s.name == server)
        .ok_or_else(|| CommandError::UnknownServer {
            backend: backend.to_string(),
            server: server.to_string(),
        })
}

/// Apply `change` to a copy of the running config and swap the result in.
fn edit(
    shared: &Shared,
    change: impl FnOnce(&mut Config) -> Result<(), CommandError>,
) -> Result<Reply, CommandError> {
    let mut cfg = (*shared.snapshot().config).clone();
    change(&mut cfg)?;
    Ok(Reply::Generation(shared.replace(Arc::new(cfg))))
}

fn server_mut<'c>(
    cfg: &'c mut Config,
    backend: &str,
    server: &str,
) -> Result<&'c mut ServerConfig, CommandError> {
    let b = cfg
        .backends
        .iter_mut()
        .find(|b| b.name == backend)
        .ok_or_else(|| CommandError::UnknownBackend(backend.to_string()))?;
    b.servers
        .iter_mut()
        .find(|s| s.name == server)
        .ok_or_else(|| CommandError::UnknownServer {
            backend: backend.to_string(),
            server: server.to_string(),
        })
}

fn add_server(shared: &Shared, new: NewServer) -> Result<Reply, CommandError> {
    let NewServer {
        backend,
        server,
        addr,
        weight,
        backup,
        check,
    } = new;
    if weight > crate::config::defaults::MAX_WEIGHT {
        return Err(CommandError::BadWeight(weight));
    }
    edit(shared, |cfg| {
        let b = cfg
            .backends
            .iter_mut()
            .find(|b| b.name == backend)
            .ok_or_else(|| CommandError::UnknownBackend(backend.clone()))?;
        if b.servers.iter().any(|s| s.name == server) {
            return Err(CommandError::Exists { backend, server });
        }
        let health = match check {
            false => None,
            true => Some(
                b.servers
                    .iter()
                    .find_map(|s| s.health.clone())
                    .ok_or_else(|| CommandError::NoCheck(backend.clone()))?,
            ),
        };
        tracing::info!(backend, server, %addr, weight, backup, check, "server added by command");
        b.servers.push(ServerConfig {
            cookie: server.clone(),
            name: server,
            addr,
            weight,
            maxconn: None,
            backup,
            send_proxy: None,
            health,
            // Like the backend's other servers.
            tls: b.tls.clone(),
        });
        Ok(())
    })
}

fn del_server(shared: &Shared, backend: &str, server: &str) -> Result<Reply, CommandError> {
    let rt = shared.snapshot();
    let s = find(&rt, backend, server)?;
    let open = s.state.inflight();
    if !matches!(s.state.cond.admin(), Admin::Maint | Admin::Drain) || open > 0 {
        return Err(CommandError::Busy {
            backend: backend.to_string(),
            server: server.to_string(),
            open,
        });
    }
    edit(shared, |cfg| {
        if let Some(b) = cfg.backends.iter_mut().find(|b| b.name == backend) {
            b.servers.retain(|s| s.name != server);
        }
        Ok(())
    })
}
