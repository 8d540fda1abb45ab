//! The admin socket's line protocol: one command per line, or several
//! separated by `;`, words separated by spaces, HAProxy's names where it has
//! one. Parsing is pure: a line becomes typed commands or one error, and
//! nothing runs until the whole line parsed.

use std::net::SocketAddr;
use std::time::Duration;

use crate::command::{AdminState, NewServer};

/// `show stat`'s formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatFormat {
    Csv,
    Json,
}

/// A weight, absolute or in per cent of the configured one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Weight {
    Absolute(u32),
    Percent(u32),
}

/// One admin command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminCmd {
    Help,
    /// Interactive mode: a prompt, and the connection stays open.
    Prompt,
    Quit,
    ShowInfo,
    ShowStat(StatFormat),
    ShowServersState(Option<String>),
    ShowBackend,
    ShowFrontend,
    ShowErrors(Option<String>),
    ShowSessions,
    ShowConfigDiff,
    SetState {
        backend: String,
        server: String,
        state: AdminState,
    },
    SetWeight {
        backend: String,
        server: String,
        weight: Weight,
    },
    SetAddr {
        backend: String,
        server: String,
        addr: SocketAddr,
    },
    AddServer(NewServer),
    DelServer {
        backend: String,
        server: String,
        /// `when-drained [TIMEOUT]`: drain, wait for its connections to end.
        when_drained: Option<Duration>,
    },
    ShutdownSessions {
        backend: String,
        server: String,
    },
    DisableFrontend(String),
    EnableFrontend(String),
    Reload,
    /// Read every TLS frontend's certificate files again and serve them.
    ReloadTls,
    /// Write the runtime changes into the config file.
    WriteConfig,
}

impl AdminCmd {
    /// Whether the read-only socket may run it.
    pub fn read_only(&self) -> bool {
        matches!(
            self,
            AdminCmd::Help
                | AdminCmd::Prompt
                | AdminCmd::Quit
                | AdminCmd::ShowInfo
                | AdminCmd::ShowStat(_)
                | AdminCmd::ShowServersState(_)
                | AdminCmd::ShowBackend
                | AdminCmd::ShowFrontend
                | AdminCmd::ShowErrors(_)
                | AdminCmd::ShowSessions
                | AdminCmd::ShowConfigDiff
        )
    }
}

/// The default wait of `del server ... when-drained`.
pub const DRAIN_WAIT: Duration = Duration::from_secs(30);

pub const HELP: &str = "\
help                                   this list
prompt                                 interactive mode (a prompt; the connection stays open)
quit                                   close the connection
show info                              version, uptime, generation, reloads, connections, limits
show stat [json|csv]                   every counter (csv: HAProxy's columns; json: /stats.json)
show servers state [BACKEND]           each server: address, state, health, weight, connections
show backend                           the backends
show frontend                          the frontends and whether they accept
show errors [FRONTEND]                 the last rejected requests, with what the client sent
show sessions                          open client connections
show config diff                       what the running state differs from the config file by
set server B/S state ready|drain|maint take traffic, finish open connections only, or take nothing
set server B/S weight N[%]             0..256, or a per cent of the configured weight
set server B/S addr IP[:PORT]          move the server (its counters start again)
add server B/S IP:PORT [weight N] [backup] [check]
                                       a new server, balanced at once (checked like the others)
del server B/S [when-drained [TIMEOUT]] remove it (it must be in maint or drain, with no connection;
                                       when-drained drains it and waits, default 30s)
shutdown sessions server B/S           close the connections the server is serving
disable frontend F / enable frontend F stop / resume accepting (clients wait in the backlog)
reload                                 read the config file again and apply it
reload tls                             read the TLS certificate files again (the rest stays)
write config                           put the runtime changes (weights, addresses, servers) in the file
Several commands on one line: separated by \";\".";

/// Parse one line into its commands.
pub fn parse_line(line: &str) -> Result<Vec<AdminCmd>, String> {
    let mut cmds = Vec::new();
    for part in line.split(';') {
        let words: Vec<&str> = part.split_whitespace().collect();
        if words.is_empty() {
            continue;
        }
        cmds.push(parse(&words)?);
    }
    Ok(cmds)
}

fn backend_server(w: &str) -> Result<(String, String), String> {
    match w.split_once('/') {
        Some((b, s)) if !b.is_empty() && !s.is_empty() && !s.contains('/') => {
            Ok((b.to_string(), s.to_string()))
        }
        _ => Err(format!("\"{w}\" is not BACKEND/SERVER")),
    }
}

fn addr(w: &str, default_port: Option<u16>) -> Result<SocketAddr, String> {
    if let Ok(a) = w.parse::<SocketAddr>() {
        return Ok(a);
    }
    if let (Ok(ip), Some(port)) = (w.parse::<std::net::IpAddr>(), default_port) {
        return Ok(SocketAddr::new(ip, port));
    }
    Err(format!("\"{w}\" is not an address like 127.0.0.1:9001"))
}

fn weight(w: &str) -> Result<Weight, String> {
    let bad = || format!("\"{w}\" is not a weight (0..256, or a per cent like 50%)");
    match w.strip_suffix('%') {
        Some(p) => p.parse().map(Weight::Percent).map_err(|_| bad()),
        None => w.parse().map(Weight::Absolute).map_err(|_| bad()),
    }
}

fn parse(w: &[&str]) -> Result<AdminCmd, String> {
    use AdminCmd::*;
    let unknown = || format!("unknown command \"{}\" (\"help\" lists them)", w.join(" "));
    Ok(match w {
        ["help"] => Help,
        ["prompt"] => Prompt,
        ["quit"] | ["exit"] => Quit,
        ["show", "info"] => ShowInfo,
        ["show", "stat"] | ["show", "stat", "csv"] => ShowStat(StatFormat::Csv),
        ["show", "stat", "json"] => ShowStat(StatFormat::Json),
        ["show", "servers", "state"] => ShowServersState(None),
        ["show", "servers", "state", b] => ShowServersState(Some(b.to_string())),
        ["show", "backend"] => ShowBackend,
        ["show", "frontend"] => ShowFrontend,
        ["show", "errors"] => ShowErrors(None),
        ["show", "errors", f] => ShowErrors(Some(f.to_string())),
        ["show", "sessions"] | ["show", "sess"] => ShowSessions,
        ["show", "config", "diff"] => ShowConfigDiff,
        ["set", "server", bs, "state", st] => {
            let (backend, server) = backend_server(bs)?;
            let state = match *st {
                "ready" => AdminState::Ready,
                "drain" => AdminState::Drain,
                "maint" => AdminState::Maint,
                other => {
                    return Err(format!("unknown state \"{other}\" (ready, drain or maint)"));
                }
            };
            SetState {
                backend,
                server,
                state,
            }
        }
        ["set", "server", bs, "weight", n] => {
            let (backend, server) = backend_server(bs)?;
            SetWeight {
                backend,
                server,
                weight: weight(n)?,
            }
        }
        ["set", "server", bs, "addr", a] => {
            let (backend, server) = backend_server(bs)?;
            SetAddr {
                backend,
                server,
                addr: addr(a, None).or_else(|e| {
                    // `addr IP` keeps the port: resolved against the server later.
                    a.parse::<std::net::IpAddr>()
                        .map(|ip| SocketAddr::new(ip, 0))
                        .map_err(|_| e)
                })?,
            }
        }
        ["set", "server", ..] => {
            return Err("usage: set server BACKEND/SERVER state|weight|addr VALUE".into());
        }
        ["add", "server", bs, a, rest @ ..] => {
            let (backend, server) = backend_server(bs)?;
            let mut new = NewServer {
                backend,
                server,
                addr: addr(a, None)?,
                weight: crate::config::defaults::WEIGHT,
                backup: false,
                check: false,
            };
            let mut rest = rest.iter();
            while let Some(opt) = rest.next() {
                match *opt {
                    "weight" => {
                        let n = rest.next().ok_or("weight needs a value")?;
                        new.weight = match weight(n)? {
                            Weight::Absolute(n) => n,
                            Weight::Percent(_) => {
                                return Err("a new server's weight is a number".into());
                            }
                        };
                    }
                    "backup" => new.backup = true,
                    "check" => new.check = true,
                    other => {
                        return Err(format!(
                            "unknown option \"{other}\" (weight N, backup, check)"
                        ));
                    }
                }
            }
            AddServer(new)
        }
        ["add", "server", ..] => {
            return Err(
                "usage: add server BACKEND/SERVER IP:PORT [weight N] [backup] [check]".into(),
            );
        }
        ["del", "server", bs] => {
            let (backend, server) = backend_server(bs)?;
            DelServer {
                backend,
                server,
                when_drained: None,
            }
        }
        ["del", "server", bs, "when-drained", rest @ ..] if rest.len() <= 1 => {
            let (backend, server) = backend_server(bs)?;
            let wait = match rest.first() {
                Some(d) => crate::config::units::parse_duration(d)
                    .map_err(|e| format!("when-drained: {e}"))?,
                None => DRAIN_WAIT,
            };
            DelServer {
                backend,
                server,
                when_drained: Some(wait),
            }
        }
        ["shutdown", "sessions", "server", bs] => {
            let (backend, server) = backend_server(bs)?;
            ShutdownSessions { backend, server }
        }
        ["disable", "frontend", f] => DisableFrontend(f.to_string()),
        ["enable", "frontend", f] => EnableFrontend(f.to_string()),
        ["reload"] => Reload,
        ["reload", "tls"] => ReloadTls,
        ["write", "config"] => WriteConfig,
        _ => return Err(unknown()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_become_commands() {
        assert_eq!(
            parse_line("set server app/a state drain; show servers state app").unwrap(),
            [
                AdminCmd::SetState {
                    backend: "app".into(),
                    server: "a".into(),
                    state: AdminState::Drain
                },
                AdminCmd::ShowServersState(Some("app".into()))
            ]
        );
        assert_eq!(
            parse_line("set server app/a weight 50%").unwrap()[0],
            AdminCmd::SetWeight {
                backend: "app".into(),
                server: "a".into(),
                weight: Weight::Percent(50)
            }
        );
        assert_eq!(
            parse_line("add server app/c 127.0.0.1:9003 weight 3 backup check").unwrap()[0],
            AdminCmd::AddServer(NewServer {
                backend: "app".into(),
                server: "c".into(),
                addr: "127.0.0.1:9003".parse().unwrap(),
                weight: 3,
                backup: true,
                check: true
            })
        );
        assert_eq!(
            parse_line("del server app/c when-drained 5s").unwrap()[0],
            AdminCmd::DelServer {
                backend: "app".into(),
                server: "c".into(),
                when_drained: Some(Duration::from_secs(5))
            }
        );
        assert_eq!(parse_line("  ;  ").unwrap(), []);
        assert!(parse_line("show stat json").unwrap()[0].read_only());
        assert!(!parse_line("reload").unwrap()[0].read_only());
    }

    #[test]
    fn mistakes_are_one_clear_error_and_nothing_runs() {
        let e = |l: &str| parse_line(l).unwrap_err();
        assert_eq!(
            e("shwo info"),
            "unknown command \"shwo info\" (\"help\" lists them)"
        );
        assert_eq!(
            e("show info; set server app state drain"),
            "\"app\" is not BACKEND/SERVER"
        );
        assert_eq!(
            e("set server app/a state down"),
            "unknown state \"down\" (ready, drain or maint)"
        );
        assert!(e("set server app/a weight lots").contains("is not a weight"));
        assert!(e("add server app/c nowhere").contains("is not an address"));
        assert!(e("add server app/c 127.0.0.1:1 colour red").contains("unknown option \"colour\""));
        assert!(e("del server app/c when-drained soon").starts_with("when-drained: "));
    }
}
