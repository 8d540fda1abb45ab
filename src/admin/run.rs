//! What each admin command does, through the command layer, and its answer
//! as text. A change that succeeds is also written to the state file
//! (`state.rs`) before it is acknowledged.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::parse::{AdminCmd, HELP, StatFormat, Weight};
use super::state::{Added, Overrides};
use crate::command::{AdminState, Command, CommandError, execute};
use crate::runtime::Shared;
use crate::stats::render;

/// An answer: its text, and whether it is an error (`error: ...`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub text: String,
    pub error: bool,
}

impl Answer {
    fn ok(text: impl Into<String>) -> Answer {
        Answer {
            text: text.into(),
            error: false,
        }
    }

    fn err(text: impl std::fmt::Display) -> Answer {
        Answer {
            text: format!("error: {text}"),
            error: true,
        }
    }
}

/// What the admin socket works on.
pub struct Ctl {
    pub shared: Arc<Shared>,
    /// The config file (for `write config`).
    pub config_file: Option<PathBuf>,
    pub state_file: Option<PathBuf>,
    /// The runtime changes, as in the state file.
    pub overrides: Mutex<Overrides>,
    /// The daemon's listeners, which a reload reconciles (set once started).
    pub listeners: std::sync::OnceLock<Arc<crate::listeners::Listeners>>,
}

impl Ctl {
    /// Run one command.
    pub async fn run(&self, cmd: AdminCmd) -> Answer {
        use AdminCmd::*;
        match cmd {
            Help => Answer::ok(HELP),
            Prompt | Quit => Answer::ok(""),
            ShowInfo => Answer::ok(self.info()),
            ShowStat(StatFormat::Csv) => Answer::ok(render::csv::render(&self.shared.stats())),
            ShowStat(StatFormat::Json) => {
                let snap = self.shared.stats();
                Answer::ok(render::json::render(&snap, &self.shared.collector, 0).to_string())
            }
            ShowServersState(b) => self.servers_state(b.as_deref()),
            ShowBackend => Answer::ok(self.backends()),
            ShowFrontend => Answer::ok(self.frontends()),
            ShowErrors(f) => self.errors(f.as_deref()),
            ShowSessions => Answer::ok(self.sessions()),
            ShowConfigDiff => Answer::ok(self.config_diff()),
            SetState {
                backend,
                server,
                state,
            } => self.set_state(&backend, &server, state),
            SetWeight {
                backend,
                server,
                weight,
            } => self.set_weight(&backend, &server, weight),
            SetAddr {
                backend,
                server,
                addr,
            } => self.set_addr(&backend, &server, addr),
            AddServer(new) => self.add_server(new),
            DelServer {
                backend,
                server,
                when_drained,
            } => self.del_server(&backend, &server, when_drained).await,
            ShutdownSessions { backend, server } => self.shutdown_sessions(backend, server),
            DisableFrontend(f) => self.pause_frontend(&f, true),
            EnableFrontend(f) => self.pause_frontend(&f, false),
            Reload => match self.reload() {
                Ok(text) => Answer::ok(text),
                Err(e) => Answer::err(e),
            },
            ReloadTls => match self.reload_tls() {
                Ok(text) => Answer::ok(text),
                Err(e) => Answer::err(e),
            },
            WriteConfig => self.write_config(),
        }
    }

    /// `show backend`: their names.
    fn backends(&self) -> String {
        let rt = self.shared.snapshot();
        let mut out = String::from("# name\n");
        for b in &rt.backends {
            let _ = writeln!(out, "{}", b.name);
        }
        out
    }

    /// `show frontend`: name, mode, whether it accepts, addresses.
    fn frontends(&self) -> String {
        let rt = self.shared.snapshot();
        let mut out = String::from("# name mode status addresses\n");
        for f in &rt.config.frontends {
            let status = if self.shared.frontend_paused(&f.name) {
                "DISABLED"
            } else {
                "OPEN"
            };
            let addrs: Vec<String> = f.listen.iter().map(|a| a.to_string()).collect();
            let mode = match f.mode {
                crate::config::Mode::Tcp => "tcp",
                crate::config::Mode::Http => "http",
            };
            let _ = writeln!(out, "{} {mode} {status} {}", f.name, addrs.join(","));
        }
        out
    }

    /// `show config diff`: the runtime changes against the file.
    fn config_diff(&self) -> String {
        let lines = self.overrides().diff();
        if lines.is_empty() {
            "the running state is the config file's\n".into()
        } else {
            lines.join("\n") + "\n"
        }
    }

    /// `shutdown sessions server B/S`: close every connection it serves.
    fn shutdown_sessions(&self, backend: String, server: String) -> Answer {
        let rt = self.shared.snapshot();
        let Some(s) = rt
            .backend(&backend)
            .and_then(|b| b.all_servers().find(|s| *s.name == *server))
        else {
            return Answer::err(CommandError::UnknownServer { backend, server });
        };
        let n = self.shared.sessions.kill_server(s.state.id);
        tracing::info!(
            backend,
            server,
            sessions = n,
            "sessions shut down by command"
        );
        Answer::ok(format!("{n} session(s) closed\n"))
    }

    /// `disable frontend` / `enable frontend`: stop or resume accepting.
    fn pause_frontend(&self, f: &str, paused: bool) -> Answer {
        if self.shared.snapshot().frontend(f).is_none() {
            return Answer::err(format!("no frontend \"{f}\""));
        }
        self.shared.set_frontend_paused(f, paused);
        if paused {
            tracing::info!(frontend = %f, "frontend disabled by command: not accepting");
            Answer::ok(format!(
                "frontend {f}: not accepting (clients wait in the backlog)\n"
            ))
        } else {
            tracing::info!(frontend = %f, "frontend enabled by command: accepting");
            Answer::ok(format!("frontend {f}: accepting\n"))
        }
    }

    /// Read the config file again, put the runtime changes on top, and swap
    /// it in; on any error nothing changes (and the error says why).
    pub fn reload(&self) -> Result<String, String> {
        let r = self.reload_inner();
        let summary = match &r {
            Ok(_) => Ok(self.shared.snapshot().generation),
            Err(e) => Err(e.lines().next().unwrap_or_default().to_string()),
        };
        self.shared.note_reload(summary);
        r
    }

    fn reload_inner(&self) -> Result<String, String> {
        let Some(path) = &self.config_file else {
            return Err("the daemon runs without a config file".into());
        };
        let failed = |e: String| {
            self.shared.global.reloads_failed.inc();
            tracing::warn!(file = %path.display(), "reload refused: {e}");
            e
        };
        let mut cfg = crate::config::load(path).map_err(|e| {
            failed(format!(
                "reload refused, the running configuration stays:\n{e}"
            ))
        })?;
        let running = self.shared.snapshot();
        let mut notes = keep_process_settings(&mut cfg, &running.config);
        // New listeners are bound before anything changes: a busy port
        // refuses the whole reload.
        let plan = match self.listeners.get() {
            Some(l) => Some(l.plan(&cfg).map_err(|e| {
                failed(format!(
                    "reload refused, the running configuration stays: {e}"
                ))
            })?),
            None => None,
        };
        notes.extend(self.overrides().apply(&mut cfg));
        let warnings = cfg.warnings.len();
        let generation = match execute(&self.shared, Command::Reload(Box::new(cfg))) {
            Ok(crate::command::Reply::Generation(g)) => g,
            Ok(_) => 0,
            Err(e) => return Err(failed(e.to_string())),
        };
        if let (Some(l), Some(plan)) = (self.listeners.get(), plan) {
            notes.extend(l.apply(plan, &self.shared.snapshot().config));
        }
        self.apply_states();
        if let Some(p) = &self.state_file {
            let _ = self.overrides().save(p);
        }
        for n in &notes {
            tracing::info!("reload: {n}");
        }
        tracing::info!(generation, file = %path.display(), "configuration reloaded");
        let mut out = format!("reloaded: generation {generation}");
        if warnings > 0 {
            let _ = write!(out, ", {warnings} warning(s) (see `fulcrum check`)");
        }
        out.push('\n');
        for n in notes {
            let _ = writeln!(out, "  {n}");
        }
        Ok(out)
    }

    /// Read the certificate files of every TLS frontend again and swap in the
    /// running configuration with them: new handshakes get them, open
    /// connections keep their sessions. One bad file changes nothing.
    pub fn reload_tls(&self) -> Result<String, String> {
        let running = self.shared.snapshot();
        let mut cfg = (*running.config).clone();
        let mut errors = Vec::new();
        let mut n = 0;
        for f in &mut cfg.frontends {
            let Some(tls) = &f.tls else { continue };
            match tls.reread() {
                Ok(fresh) => {
                    f.tls = Some(std::sync::Arc::new(fresh));
                    n += 1;
                }
                Err(e) => errors.push(format!("frontend \"{}\": {e}", f.name)),
            }
        }
        if !errors.is_empty() {
            self.shared.global.reloads_failed.inc();
            let e = format!(
                "reload tls refused, the running certificates stay:\n{}",
                errors.join("\n")
            );
            tracing::warn!("{e}");
            return Err(e);
        }
        if n == 0 {
            return Err("no frontend terminates TLS".into());
        }
        let generation = match execute(&self.shared, Command::Reload(Box::new(cfg))) {
            Ok(crate::command::Reply::Generation(g)) => g,
            Ok(_) => 0,
            Err(e) => return Err(e.to_string()),
        };
        self.shared.note_reload(Ok(generation));
        tracing::info!(frontends = n, generation, "TLS certificates read again");
        Ok(format!(
            "tls reloaded: the certificates of {n} frontend(s) read again, generation {generation}\n"
        ))
    }

    /// Set every server's runtime state (drain, maint) again, after a start
    /// or a reload.
    pub fn apply_states(&self) {
        let ov = self.overrides().clone();
        for o in ov.servers.iter().filter(|o| o.state.is_some()) {
            let state = match o.state.as_deref() {
                Some("maint") => AdminState::Maint,
                Some("drain") => AdminState::Drain,
                _ => continue,
            };
            let cmd = Command::SetState {
                backend: o.backend.clone(),
                server: o.server.clone(),
                state,
            };
            if let Err(e) = execute(&self.shared, cmd) {
                tracing::info!(
                    "runtime state of {}/{} not applied: {e}",
                    o.backend,
                    o.server
                );
            }
        }
    }

    fn overrides(&self) -> std::sync::MutexGuard<'_, Overrides> {
        self.overrides.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Record a change in the overrides and write the state file.
    fn record(&self, change: impl FnOnce(&mut Overrides)) -> Result<(), String> {
        let mut ov = self.overrides();
        change(&mut ov);
        ov.prune();
        match &self.state_file {
            Some(p) => ov.save(p).map_err(|e| e.to_string()),
            None => Ok(()),
        }
    }

    /// The answer to a change: its text, or the state file's failure.
    fn changed(&self, text: String, change: impl FnOnce(&mut Overrides)) -> Answer {
        match self.record(change) {
            Ok(()) => Answer::ok(text),
            Err(e) => Answer::err(format!("{text}applied, but not kept across restarts: {e}")),
        }
    }

    fn file_server(&self, backend: &str, server: &str) -> Option<crate::config::ServerConfig> {
        let rt = self.shared.snapshot();
        rt.config
            .backends
            .iter()
            .find(|b| b.name == backend)?
            .servers
            .iter()
            .find(|s| s.name == server)
            .cloned()
    }

    fn set_state(&self, backend: &str, server: &str, state: AdminState) -> Answer {
        let cmd = Command::SetState {
            backend: backend.into(),
            server: server.into(),
            state,
        };
        if let Err(e) = execute(&self.shared, cmd) {
            return Answer::err(e);
        }
        let name = match state {
            AdminState::Ready => "ready",
            AdminState::Drain => "drain",
            AdminState::Maint => "maint",
        };
        self.changed(format!("{backend}/{server}: state {name}\n"), |ov| {
            ov.entry(backend, server).state =
                (state != AdminState::Ready).then(|| name.to_string());
        })
    }

    fn set_weight(&self, backend: &str, server: &str, weight: Weight) -> Answer {
        let Some(s) = self.file_server(backend, server) else {
            return Answer::err(self.unknown(backend, server));
        };
        // A per cent is of the weight the file gives (HAProxy: the initial weight).
        let base = self.base_weight(backend, server, s.weight);
        let w = match weight {
            Weight::Absolute(n) => n,
            Weight::Percent(p) => ((u64::from(base) * u64::from(p) + 50) / 100) as u32,
        };
        let cmd = Command::SetWeight {
            backend: backend.into(),
            server: server.into(),
            weight: w,
        };
        if let Err(e) = execute(&self.shared, cmd) {
            return Answer::err(e);
        }
        tracing::info!(backend, server, weight = w, "server weight set by command");
        self.changed(format!("{backend}/{server}: weight {w}\n"), |ov| {
            let o = ov.entry(backend, server);
            if let Some(a) = &mut o.added {
                a.weight = w;
            } else {
                o.file_weight.get_or_insert(base);
                o.weight = (Some(w) != o.file_weight).then_some(w);
                if o.weight.is_none() {
                    o.file_weight = None;
                }
            }
        })
    }

    /// The file's weight for a server (its weight before any runtime change).
    fn base_weight(&self, backend: &str, server: &str, current: u32) -> u32 {
        let ov = self.overrides();
        ov.servers
            .iter()
            .find(|o| o.backend == backend && o.server == server)
            .and_then(|o| o.file_weight.or(o.added.as_ref().map(|a| a.weight)))
            .unwrap_or(current)
    }

    fn set_addr(&self, backend: &str, server: &str, addr: std::net::SocketAddr) -> Answer {
        let Some(before) = self.file_server(backend, server) else {
            return Answer::err(self.unknown(backend, server));
        };
        let cmd = Command::SetAddr {
            backend: backend.into(),
            server: server.into(),
            addr,
        };
        if let Err(e) = execute(&self.shared, cmd) {
            return Answer::err(e);
        }
        let now = self.file_server(backend, server).map_or(addr, |s| s.addr);
        self.changed(format!("{backend}/{server}: address {now}\n"), |ov| {
            let o = ov.entry(backend, server);
            if let Some(a) = &mut o.added {
                a.addr = now;
            } else {
                o.file_addr.get_or_insert(before.addr);
                o.addr = (Some(now) != o.file_addr).then_some(now);
                if o.addr.is_none() {
                    o.file_addr = None;
                }
            }
        })
    }

    fn add_server(&self, new: crate::command::NewServer) -> Answer {
        if let Err(e) = execute(&self.shared, Command::AddServer(new.clone())) {
            return Answer::err(e);
        }
        let text = format!("{}/{}: added at {}\n", new.backend, new.server, new.addr);
        self.changed(text, |ov| {
            let o = ov.entry(&new.backend, &new.server);
            if o.deleted {
                // Removed, then added back: a runtime server, not the file's.
                o.deleted = false;
            }
            o.added = Some(Added {
                addr: new.addr,
                weight: new.weight,
                backup: new.backup,
                check: new.check,
            });
        })
    }

    async fn del_server(&self, backend: &str, server: &str, wait: Option<Duration>) -> Answer {
        if let Some(wait) = wait {
            let rt = self.shared.snapshot();
            let Some(s) = rt
                .backend(backend)
                .and_then(|b| b.all_servers().find(|s| &*s.name == server))
            else {
                return Answer::err(self.unknown(backend, server));
            };
            if s.state.cond.admin() == crate::server::Admin::Ready {
                let a = self.set_state(backend, server, AdminState::Drain);
                if a.error {
                    return a;
                }
            }
            let state = s.state.clone();
            drop(rt);
            let until = tokio::time::Instant::now() + wait;
            while state.inflight() > 0 {
                if tokio::time::Instant::now() >= until {
                    return Answer::err(format!(
                        "{backend}/{server}: {} connection(s) still open after {}: not removed (it stays draining)",
                        state.inflight(),
                        crate::config::units::fmt_duration(wait)
                    ));
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        let cmd = Command::DelServer {
            backend: backend.into(),
            server: server.into(),
        };
        if let Err(e) = execute(&self.shared, cmd) {
            return Answer::err(e);
        }
        tracing::info!(backend, server, "server removed by command");
        self.changed(format!("{backend}/{server}: removed\n"), |ov| {
            let o = ov.entry(backend, server);
            if o.added.take().is_none() {
                o.deleted = true;
            }
            o.state = None;
            o.weight = None;
            o.addr = None;
        })
    }

    fn unknown(&self, backend: &str, server: &str) -> CommandError {
        if self.shared.snapshot().backend(backend).is_none() {
            CommandError::UnknownBackend(backend.into())
        } else {
            CommandError::UnknownServer {
                backend: backend.into(),
                server: server.into(),
            }
        }
    }

    fn write_config(&self) -> Answer {
        let Some(path) = &self.config_file else {
            return Answer::err("the daemon runs without a config file");
        };
        let written = {
            let ov = self.overrides();
            super::commit::write(path, &ov)
        };
        match written {
            Ok(n) => {
                let r = self.record(super::commit::forget_written);
                tracing::info!(changes = n, file = %path.display(), "runtime changes written to the config file");
                match r {
                    Ok(()) => Answer::ok(format!(
                        "{n} change(s) written to {} (server states stay runtime-only)\n",
                        path.display()
                    )),
                    Err(e) => Answer::err(e),
                }
            }
            Err(e) => Answer::err(e),
        }
    }

    fn info(&self) -> String {
        let s = self.shared.stats();
        let g = &s.global;
        let mut out = String::new();
        let mut kv = |k: &str, v: &dyn std::fmt::Display| {
            let _ = writeln!(out, "{k}: {v}");
        };
        kv("Name", &"fulcrum");
        kv("Version", &g.version);
        kv("Pid", &g.pid);
        kv("Uptime_sec", &g.uptime_s);
        kv("Generation", &g.generation);
        kv("Reloads", &g.reloads);
        kv("Reloads_failed", &g.reloads_failed);
        let last = match &g.last_reload {
            None => "none".to_string(),
            Some((at, r)) => {
                let mut when = String::new();
                crate::stats::access::rfc3339(
                    std::time::UNIX_EPOCH + Duration::from_secs(*at),
                    &mut when,
                );
                match r {
                    Ok(generation) => format!("{when} ok (generation {generation})"),
                    Err(e) => format!("{when} refused: {e}"),
                }
            }
        };
        kv("Last_reload", &last);
        kv("CurrConns", &g.conn_cur);
        kv("Maxconn", &g.maxconn);
        kv("Fd_limit", &g.fd_limit);
        kv("Threads", &g.threads);
        kv("Sessions", &self.shared.sessions.list().len());
        kv("Frontends", &s.frontends.len());
        kv("Backends", &s.backends.len());
        kv(
            "Servers",
            &s.backends.iter().map(|b| b.servers.len()).sum::<usize>(),
        );
        kv("Log_lines", &g.log_lines);
        kv("Log_dropped", &g.log_dropped);
        kv("Drain_cut", &g.drain_cut);
        kv("Runtime_changes", &self.overrides().servers.len());
        out
    }

    fn servers_state(&self, backend: Option<&str>) -> Answer {
        let cmd = Command::ShowServers {
            backend: backend.map(str::to_string),
        };
        let list = match execute(&self.shared, cmd) {
            Ok(crate::command::Reply::Servers(l)) => l,
            Ok(_) => Vec::new(),
            Err(e) => return Answer::err(e),
        };
        let mut out = String::from(
            "# backend server addr status admin health weight/configured conns picked last_check\n",
        );
        for (b, s) in list {
            let _ = writeln!(
                out,
                "{b} {} {} {} {} {} {}/{} {} {} {}",
                s.name,
                s.addr,
                s.status,
                s.admin,
                if s.ejected { "ejected" } else { &s.health },
                s.weight,
                s.weight_configured,
                s.conn_cur,
                s.picked,
                if s.last_check.is_empty() {
                    "-"
                } else {
                    s.last_check.as_str()
                }
            );
        }
        Answer::ok(out)
    }

    fn errors(&self, frontend: Option<&str>) -> Answer {
        let snap = self.shared.stats();
        if let Some(f) = frontend
            && snap.frontend(f).is_none()
        {
            return Answer::err(format!("no frontend \"{f}\""));
        }
        let mut out = String::new();
        for f in snap
            .frontends
            .iter()
            .filter(|f| frontend.is_none_or(|n| n == f.name))
        {
            for r in &f.last_rejected {
                let mut when = String::new();
                crate::stats::access::rfc3339(
                    std::time::UNIX_EPOCH + Duration::from_secs(r.at),
                    &mut when,
                );
                let _ = writeln!(
                    out,
                    "[{when}] frontend {} client {} class {} status {} ({} bytes kept)",
                    f.name,
                    r.client,
                    r.class,
                    r.status,
                    r.head.len()
                );
                dump(&r.head, &mut out);
            }
        }
        if out.is_empty() {
            out.push_str("no rejected request\n");
        }
        Answer::ok(out)
    }

    fn sessions(&self) -> String {
        let rt = self.shared.snapshot();
        let names: std::collections::HashMap<u64, String> = rt
            .backends
            .iter()
            .flat_map(|b| {
                b.all_servers()
                    .map(move |s| (s.state.id, format!("{}/{}", b.name, s.name)))
            })
            .collect();
        let mut out = String::from("# id client frontend age state server\n");
        for s in self.shared.sessions.list() {
            let (state, server) = match s.server() {
                0 => ("idle", "-".to_string()),
                id => (
                    "active",
                    names.get(&id).cloned().unwrap_or_else(|| format!("#{id}")),
                ),
            };
            let _ = writeln!(
                out,
                "{} {} {} {}s {state} {server}",
                s.id,
                s.client(),
                s.frontend,
                s.since.elapsed().as_secs()
            );
        }
        out
    }
}

/// What a running process cannot change (threads, limits sized at start, the
/// stats page, the access log, the admin socket, the fd budget): the new
/// configuration keeps the running values, and each difference is named.
fn keep_process_settings(
    new: &mut crate::config::Config,
    old: &crate::config::Config,
) -> Vec<String> {
    let mut notes = Vec::new();
    let mut keep = |what: &str, differs: bool| {
        if differs {
            notes.push(format!(
                "{what} changed: it needs a restart; the running value stays"
            ));
        }
    };
    let (g, og) = (&new.global, &old.global);
    keep("global.threads", g.threads != og.threads);
    keep("global.threading", g.threading != og.threading);
    keep("global.maxconn", g.maxconn != og.maxconn);
    keep("global.log_level", g.log_level != og.log_level);
    keep("global.splice", g.splice != og.splice);
    keep("global.grace", g.grace != og.grace);
    keep(
        "global.idle_park_after",
        g.idle_park_after != og.idle_park_after,
    );
    keep("[stats]", new.stats != old.stats);
    keep("[log]", new.log != old.log);
    keep("[admin]", new.admin != old.admin);
    for f in &new.frontends {
        if let Some(of) = old.frontends.iter().find(|o| o.name == f.name) {
            keep(
                &format!("frontend \"{}\" maxconn", f.name),
                f.maxconn != of.maxconn,
            );
            keep(
                &format!("frontend \"{}\" backlog", f.name),
                f.backlog != of.backlog,
            );
            keep(
                &format!("frontend \"{}\" defer_accept", f.name),
                f.defer_accept != of.defer_accept,
            );
        }
    }
    new.global = old.global.clone();
    new.stats = old.stats.clone();
    new.log = old.log.clone();
    new.admin = old.admin.clone();
    notes
}

/// Bytes as lines of 32, each with its offset, printable ASCII as is and the
/// rest escaped (a CR as `\r`, a LF ends the line as `\n`).
fn dump(bytes: &[u8], out: &mut String) {
    let mut line = String::new();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            b'\r' => line.push_str("\\r"),
            b'\n' => line.push_str("\\n"),
            b'\\' => line.push_str("\\\\"),
            0x20..=0x7e => line.push(char::from(b)),
            _ => {
                let _ = write!(line, "\\x{b:02x}");
            }
        }
        if b == b'\n' || i + 1 - start == 32 || i + 1 == bytes.len() {
            let _ = writeln!(out, "  {start:05}  {line}");
            line.clear();
            start = i + 1;
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn dumps_show_offsets_and_escapes() {
        let mut out = String::new();
        super::dump(
            b"GET / HTTP/1.1\r\nHost: a\r\nHost: \x01b\r\n\r\n",
            &mut out,
        );
        assert_eq!(
            out,
            "  00000  GET / HTTP/1.1\\r\\n\n  00016  Host: a\\r\\n\n  00025  Host: \\x01b\\r\\n\n  00035  \\r\\n\n"
        );
    }
}
