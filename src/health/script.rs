//! Script checks (keepalived's MISC_CHECK): run a program with the server in
//! its environment (`FULCRUM_SERVER_ADDR`, `FULCRUM_SERVER_PORT`,
//! `FULCRUM_SERVER_NAME`, `FULCRUM_BACKEND`). Exit 0: healthy; 1: not; with
//! `dynamic_weight`, 2..=255: healthy with weight `code − 2`. The first line it
//! prints is the check's message. It runs in its own process group, which is
//! killed whole when the timeout passes; the child is always waited for, so no
//! zombie is left behind.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncReadExt;

use super::probe::{Passed, Target};

/// Run `command` for `t`; `timeout` bounds the whole run.
pub async fn run(
    command: &[String],
    dynamic_weight: bool,
    t: &Target,
    timeout: Duration,
) -> Result<Passed, String> {
    let Some((program, args)) = command.split_first() else {
        return Err("no command".into());
    };
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .env("FULCRUM_SERVER_ADDR", t.addr.ip().to_string())
        .env("FULCRUM_SERVER_PORT", t.addr.port().to_string())
        .env("FULCRUM_SERVER_NAME", &*t.server)
        .env("FULCRUM_BACKEND", &*t.backend)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("script cannot start: {}", super::probe::why(&e)))?;
    let mut stdout = child.stdout.take();
    let run = async {
        let mut out = Vec::new();
        if let Some(s) = stdout.as_mut() {
            // Bounded: a chatty script's first kilobytes are enough.
            let _ = s.take(4096).read_to_end(&mut out).await;
        }
        (child.wait().await, out)
    };
    let (status, out) = match tokio::time::timeout(timeout, run).await {
        Ok((Ok(status), out)) => (status, out),
        Ok((Err(e), _)) => return Err(format!("script wait failed: {e}")),
        Err(_) => {
            kill_group(&mut child).await;
            return Err(format!(
                "script timeout after {} (killed)",
                crate::config::units::fmt_duration(timeout)
            ));
        }
    };
    let line = String::from_utf8_lossy(&out)
        .lines()
        .next()
        .unwrap_or("")
        .trim()
        .to_string();
    let with_line = |s: String| {
        if line.is_empty() {
            s
        } else {
            format!("{s}: {line}")
        }
    };
    match status.code() {
        Some(0) => Ok(Passed {
            weight: None,
            message: with_line("ok".into()),
        }),
        Some(code @ 2..=255) if dynamic_weight => Ok(Passed {
            weight: Some(code as u32 - 2),
            message: with_line(format!("ok, weight {}", code - 2)),
        }),
        Some(code) => Err(with_line(format!("script exit {code}"))),
        None => Err(with_line("script killed by a signal".into())),
    }
}

/// Kill the script's whole process group and reap the script.
async fn kill_group(child: &mut tokio::process::Child) {
    if let Some(pid) = child
        .id()
        .and_then(|p| rustix::process::Pid::from_raw(p as i32))
    {
        let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
    }
    let _ = child.kill().await;
    let _ = child.wait().await;
}
