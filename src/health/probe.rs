//! One active check of one server: tcp, http, script or icmp, within its
//! timeout. The answer is `Ok` (with a script's dynamic weight, if it gave
//! one, and a message) or the reason it failed, in words an operator reads in
//! the log: `connection refused`, `http status 503`, `timeout after 1s`,
//! `script exit 1: <first line>`.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpStream;

use crate::net::Stream;

use crate::config::health::{CheckKind, HealthCheck, defaults};

/// A passed check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Passed {
    /// A script's dynamic weight (`dynamic_weight = true`, exit code − 2).
    pub weight: Option<u32>,
    pub message: String,
}

/// What a check is run against, besides its configuration.
#[derive(Debug, Clone)]
pub struct Target {
    pub addr: SocketAddr,
    pub backend: std::sync::Arc<str>,
    pub server: std::sync::Arc<str>,
    /// The backend speaks TLS to its servers: so do tcp and http checks.
    pub tls: Option<std::sync::Arc<crate::tls::UpstreamTls>>,
}

/// Run `check` against `t`, giving up after `check.timeout`.
pub async fn probe(check: &HealthCheck, t: &Target) -> Result<Passed, String> {
    let timeout = check.timeout;
    let run = async {
        match &check.kind {
            CheckKind::Tcp { send, expect } => {
                tcp(t, timeout, send.as_deref(), expect.as_deref()).await
            }
            CheckKind::Http { .. } => http(&check.kind, t, timeout).await,
            CheckKind::Icmp => super::icmp::ping(t.addr.ip()).await,
            CheckKind::Script { .. } => Ok(()),
        }
        .map(|()| Passed {
            weight: None,
            message: "ok".into(),
        })
    };
    if let CheckKind::Script {
        command,
        dynamic_weight,
    } = &check.kind
    {
        // It keeps its own time: past it, its whole process group is killed.
        return super::script::run(command, *dynamic_weight, t, timeout).await;
    }
    match tokio::time::timeout(timeout, run).await {
        Ok(r) => r,
        Err(_) => Err(format!(
            "timeout after {}",
            crate::config::units::fmt_duration(timeout)
        )),
    }
}

/// The reason of an I/O failure, in words (`connection refused`).
pub fn why(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::ConnectionRefused => "connection refused".into(),
        std::io::ErrorKind::ConnectionReset => "connection reset".into(),
        _ => {
            let s = e.to_string();
            // "Host is unreachable (os error 113)" -> "host is unreachable"
            let s = s.split(" (os error").next().unwrap_or(&s).to_string();
            s.to_lowercase()
        }
    }
}

/// Connect, with a TLS handshake when the backend uses TLS.
async fn connect(t: &Target, limit: Duration) -> Result<Stream, String> {
    let s = TcpStream::connect(t.addr).await.map_err(|e| why(&e))?;
    match &t.tls {
        None => Ok(Stream::Tcp(s)),
        Some(tls) => crate::net::tls::connect_upstream(tls, s, t.addr, limit)
            .await
            .map_err(|e| e.to_string()),
    }
}

async fn send(s: &Stream, data: &[u8]) -> Result<(), String> {
    crate::net::io::write_all(s, data, None, |_| {})
        .await
        .map_err(|e| match e {
            crate::net::io::Failed::Io(e) => why(&e),
            crate::net::io::Failed::Timeout => "write timeout".into(),
        })
}

/// Read until the peer closes, `MAX_REPLY` bytes, or `enough` says so.
async fn read_reply(s: &Stream, enough: impl Fn(&[u8]) -> bool) -> Result<Vec<u8>, String> {
    let mut reply = Vec::new();
    let mut chunk = [0u8; 4096];
    while reply.len() < defaults::MAX_REPLY && !enough(&reply) {
        let n = crate::net::io::read(s, &mut chunk)
            .await
            .map_err(|e| why(&e))?;
        if n == 0 {
            break;
        }
        reply.extend_from_slice(&chunk[..n]);
    }
    reply.truncate(defaults::MAX_REPLY);
    Ok(reply)
}

fn contains(hay: &[u8], needle: &str) -> bool {
    needle.is_empty() || hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

async fn tcp(
    t: &Target,
    limit: Duration,
    data: Option<&str>,
    expect: Option<&str>,
) -> Result<(), String> {
    let s = connect(t, limit).await?;
    if let Some(data) = data {
        send(&s, data.as_bytes()).await?;
    }
    if let Some(want) = expect {
        let reply = read_reply(&s, |r| contains(r, want)).await?;
        if !contains(&reply, want) {
            return Err(format!("reply without \"{want}\""));
        }
    }
    Ok(())
}

/// The request an http check sends (HTTP/1.1, `Connection: close`).
pub fn http_request(kind: &CheckKind, addr: SocketAddr) -> Vec<u8> {
    let CheckKind::Http {
        method,
        path,
        host,
        headers,
        ..
    } = kind
    else {
        return Vec::new();
    };
    let host = host.clone().unwrap_or_else(|| addr.to_string());
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nhost: {host}\r\nuser-agent: fulcrum-check\r\nconnection: close\r\n"
    );
    for (n, v) in headers {
        req.push_str(&format!("{n}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.into_bytes()
}

/// Judge an http check's reply: its status in one of the ranges, and the body
/// holding `expect_body`.
pub fn judge_http(kind: &CheckKind, reply: &[u8]) -> Result<(), String> {
    let CheckKind::Http {
        expect_status,
        expect_body,
        ..
    } = kind
    else {
        return Ok(());
    };
    let line_end = reply.windows(2).position(|w| w == b"\r\n");
    let status: Option<u16> = line_end
        .and_then(|e| std::str::from_utf8(&reply[..e]).ok())
        .filter(|l| l.starts_with("HTTP/1."))
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok());
    let Some(status) = status else {
        return Err(if reply.is_empty() {
            "empty reply".into()
        } else {
            "malformed response".into()
        });
    };
    if !expect_status
        .iter()
        .any(|(lo, hi)| (*lo..=*hi).contains(&status))
    {
        return Err(format!("http status {status}"));
    }
    if let Some(want) = expect_body {
        let body = reply
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map_or(&[][..], |p| &reply[p + 4..]);
        if !contains(body, want) {
            return Err(format!("body without \"{want}\""));
        }
    }
    Ok(())
}

async fn http(kind: &CheckKind, t: &Target, limit: Duration) -> Result<(), String> {
    let s = connect(t, limit).await?;
    send(&s, &http_request(kind, t.addr)).await?;
    // Until the server closes, or the whole response is in (a server that
    // ignores `connection: close` still answers in time).
    let reply = read_reply(&s, response_complete).await?;
    judge_http(kind, &reply)
}

/// A whole response: its head, and its Content-Length body if it has one.
fn response_complete(r: &[u8]) -> bool {
    let Some(end) = r.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&r[..end]).to_ascii_lowercase();
    head.lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
        .is_some_and(|n| r.len() >= end + 4 + n)
}

/// How long until a check runs again: the base interval with up to 10 %
/// taken off or added, so checks never run in lock-step.
pub fn jittered(base: Duration, draw: u64) -> Duration {
    let tenth = base.as_micros() as u64 / 10;
    if tenth == 0 {
        return base;
    }
    let delta = draw % (2 * tenth + 1);
    Duration::from_micros(base.as_micros() as u64 - tenth + delta)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(expect_status: Vec<(u16, u16)>, body: Option<&str>) -> CheckKind {
        CheckKind::Http {
            method: "GET".into(),
            path: "/healthz".into(),
            host: None,
            headers: vec![("X-Check".into(), "1".into())],
            expect_status,
            expect_body: body.map(Into::into),
        }
    }

    #[test]
    fn http_requests_and_replies() {
        let k = kind(vec![(200, 399)], Some("ok"));
        let addr: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        assert_eq!(
            String::from_utf8(http_request(&k, addr)).unwrap(),
            "GET /healthz HTTP/1.1\r\nhost: 127.0.0.1:8080\r\nuser-agent: fulcrum-check\r\nconnection: close\r\nX-Check: 1\r\n\r\n"
        );
        assert_eq!(judge_http(&k, b"HTTP/1.1 200 OK\r\n\r\nall ok"), Ok(()));
        assert_eq!(
            judge_http(&k, b"HTTP/1.1 503 Unavailable\r\n\r\nok"),
            Err("http status 503".into())
        );
        assert_eq!(
            judge_http(&k, b"HTTP/1.1 204 No Content\r\n\r\n"),
            Err("body without \"ok\"".into())
        );
        assert_eq!(judge_http(&k, b""), Err("empty reply".into()));
        assert_eq!(
            judge_http(&k, b"SSH-2.0\r\n"),
            Err("malformed response".into())
        );
    }

    #[test]
    fn jitter_stays_within_a_tenth() {
        let base = Duration::from_secs(2);
        for draw in [0, 1, 12345, u64::MAX] {
            let d = jittered(base, draw);
            assert!(
                d >= Duration::from_millis(1800) && d <= Duration::from_millis(2200),
                "{d:?}"
            );
        }
    }
}
