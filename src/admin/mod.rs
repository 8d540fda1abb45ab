//! The runtime admin socket (`[admin] socket`): a Unix socket with a line
//! protocol like HAProxy's runtime API, usable with `socat`, `nc -U` and
//! `fulcrum admin`. One line is one command, or several separated by `;`
//! (`parse.rs`); each runs through the command layer (`run.rs`), and what it
//! changes is kept in the state file (`state.rs`) and can be written into the
//! config (`commit.rs`).
//!
//! A client sends a line and gets the answer; the connection then closes,
//! unless the client asked for `prompt` (interactive: a `> ` prompt after
//! each answer, until `quit`). Lines are at most `MAX_LINE` bytes; a client
//! silent for `IDLE` (or `IDLE_PROMPT` in interactive mode) is cut off. An
//! error is one line starting with `error: ` and changes nothing. Served on a
//! thread and runtime of its own, never on a traffic thread. A second,
//! read-only socket (`read_only_socket`) answers the `show` commands only.

pub mod commit;
pub mod parse;
pub mod run;
pub mod state;

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{UnixListener, UnixStream};

pub use run::Ctl;

/// The longest line a client may send.
pub const MAX_LINE: usize = 16 * 1024;
const IDLE: Duration = Duration::from_secs(30);
const IDLE_PROMPT: Duration = Duration::from_secs(600);

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error(
        "admin socket {0}: its directory is writable by everyone; put the socket in a directory only fulcrum's user can write (like /run/fulcrum)"
    )]
    OpenDirectory(PathBuf),
    #[error("admin socket {0}: another process is listening on it")]
    InUse(PathBuf),
    #[error("admin socket {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("admin socket {path}: no group \"{group}\"")]
    NoGroup { path: PathBuf, group: String },
}

/// The running admin socket(s); dropping stops them and removes the files.
pub struct AdminSocket {
    paths: Vec<PathBuf>,
    stop: Option<tokio::sync::watch::Sender<bool>>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for AdminSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AdminSocket({:?})", self.paths)
    }
}

impl AdminSocket {
    /// Bind the socket(s) of `cfg` (here, so a problem is an error at start)
    /// and serve them.
    pub fn start(cfg: &crate::config::Admin, ctl: Arc<Ctl>) -> Result<AdminSocket, AdminError> {
        let mut listeners = Vec::new();
        let mut paths = Vec::new();
        for (path, read_only) in [(&cfg.socket, false), (&cfg.read_only_socket, true)] {
            let Some(path) = path else { continue };
            let l = bind(path, cfg.mode, cfg.group.as_deref())?;
            listeners.push((l, read_only));
            paths.push(path.clone());
        }
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let handle = std::thread::Builder::new()
            .name("fulcrum-admin".into())
            .spawn(move || serve(listeners, ctl, stopped))
            .map_err(|source| AdminError::Io {
                path: paths.first().cloned().unwrap_or_default(),
                source,
            })?;
        for p in &paths {
            tracing::info!(path = %p.display(), "admin socket listening");
        }
        Ok(AdminSocket {
            paths,
            stop: Some(stop),
            handle: Some(handle),
        })
    }

    pub fn paths(&self) -> &[PathBuf] {
        &self.paths
    }
}

impl Drop for AdminSocket {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(true);
        }
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
        for p in &self.paths {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Bind `path`: refuse a world-writable directory and a socket another
/// process serves; remove a stale one; set its mode and group.
fn bind(
    path: &Path,
    mode: u32,
    group: Option<&str>,
) -> Result<std::os::unix::net::UnixListener, AdminError> {
    let io = |source| AdminError::Io {
        path: path.to_path_buf(),
        source,
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let meta = std::fs::metadata(&dir).map_err(io)?;
    if meta.permissions().mode() & 0o002 != 0 {
        return Err(AdminError::OpenDirectory(path.to_path_buf()));
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(AdminError::InUse(path.to_path_buf()));
        }
        std::fs::remove_file(path).map_err(io)?;
    }
    let l = std::os::unix::net::UnixListener::bind(path).map_err(io)?;
    l.set_nonblocking(true).map_err(io)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(io)?;
    if let Some(g) = group {
        let gid = group_id(g).ok_or_else(|| AdminError::NoGroup {
            path: path.to_path_buf(),
            group: g.to_string(),
        })?;
        std::os::unix::fs::chown(path, None, Some(gid)).map_err(io)?;
    }
    Ok(l)
}

/// A group's id from /etc/group (a number is taken as is).
fn group_id(name: &str) -> Option<u32> {
    if let Ok(n) = name.parse() {
        return Some(n);
    }
    let text = std::fs::read_to_string("/etc/group").ok()?;
    text.lines().find_map(|l| {
        let mut f = l.split(':');
        (f.next()? == name).then(|| f.nth(1)?.parse().ok())?
    })
}

fn serve(
    listeners: Vec<(std::os::unix::net::UnixListener, bool)>,
    ctl: Arc<Ctl>,
    stopped: tokio::sync::watch::Receiver<bool>,
) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "admin socket: cannot build its runtime");
            return;
        }
    };
    rt.block_on(async move {
        let mut tasks = tokio::task::JoinSet::new();
        for (l, read_only) in listeners {
            let Ok(l) = UnixListener::from_std(l) else {
                continue;
            };
            let (ctl, mut stop) = (ctl.clone(), stopped.clone());
            tasks.spawn(async move {
                let mut clients = tokio::task::JoinSet::new();
                loop {
                    tokio::select! {
                        r = l.accept() => match r {
                            Ok((s, _)) => {
                                clients.spawn(client(s, ctl.clone(), read_only));
                            }
                            Err(e) => {
                                tracing::warn!(error = %e, "admin socket: accept failed");
                                tokio::time::sleep(Duration::from_millis(100)).await;
                            }
                        },
                        _ = stop.changed() => return,
                    }
                }
            });
        }
        let mut stop = stopped.clone();
        let _ = stop.wait_for(|s| *s).await;
        tasks.shutdown().await;
    });
}

/// One client: lines in, answers out.
async fn client(mut s: UnixStream, ctl: Arc<Ctl>, read_only: bool) {
    let mut buf = Vec::new();
    let mut interactive = false;
    loop {
        let idle = if interactive { IDLE_PROMPT } else { IDLE };
        let line = match tokio::time::timeout(idle, read_line(&mut s, &mut buf)).await {
            Ok(Ok(Some(l))) => l,
            Ok(Ok(None)) | Ok(Err(_)) => return,
            Err(_) => {
                let _ = s.write_all(b"error: idle for too long; closing\n").await;
                return;
            }
        };
        let (out, quit, prompt) = answer(&line, &ctl, read_only).await;
        interactive |= prompt;
        let mut bytes = out.into_bytes();
        if interactive && !quit {
            bytes.extend_from_slice(b"> ");
        }
        if s.write_all(&bytes).await.is_err() || quit || !interactive {
            return;
        }
    }
}

/// Read one line (without its end); `None` at the end of the stream; an
/// error line is written for a line over `MAX_LINE`.
async fn read_line(s: &mut UnixStream, buf: &mut Vec<u8>) -> std::io::Result<Option<String>> {
    loop {
        if let Some(i) = buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = buf.drain(..=i).collect();
            let text = String::from_utf8_lossy(&line[..i]);
            return Ok(Some(text.trim_end_matches('\r').to_string()));
        }
        if buf.len() > MAX_LINE {
            let _ = s
                .write_all(
                    format!("error: line longer than {MAX_LINE} bytes; closing\n").as_bytes(),
                )
                .await;
            return Ok(None);
        }
        let mut chunk = [0u8; 4096];
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            // A last line without its newline still counts.
            if buf.is_empty() {
                return Ok(None);
            }
            let text = String::from_utf8_lossy(buf)
                .trim_end_matches('\r')
                .to_string();
            buf.clear();
            return Ok(Some(text));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// The answers to one line; whether to close; whether it asked for a prompt.
async fn answer(line: &str, ctl: &Ctl, read_only: bool) -> (String, bool, bool) {
    let cmds = match parse::parse_line(line) {
        Ok(c) => c,
        Err(e) => return (format!("error: {e}\n"), false, false),
    };
    if read_only && cmds.iter().any(|c| !c.read_only()) {
        return (
            "error: this socket is read-only: help, prompt, quit and the show commands only\n"
                .into(),
            false,
            false,
        );
    }
    let mut out = String::new();
    let (mut quit, mut prompt) = (false, false);
    for c in cmds {
        match c {
            parse::AdminCmd::Quit => {
                quit = true;
                break;
            }
            parse::AdminCmd::Prompt => prompt = true,
            c => {
                let a = ctl.run(c).await;
                out.push_str(&a.text);
                if !a.text.is_empty() && !a.text.ends_with('\n') {
                    out.push('\n');
                }
                if a.error {
                    // The rest of the line does not run after an error.
                    break;
                }
            }
        }
    }
    (out, quit, prompt)
}
