//! The real binary at the edge of the operating system: file-descriptor limits,
//! signals and exit codes, one instance per address, messages.

#![allow(clippy::disallowed_methods)] // blocking tests may sleep their own thread

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use support::bin::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

const CLIENTS: usize = 1500;

fn http_config(origin: SocketAddr) -> String {
    format!(
        r#"
[global]
threads = 1

[[frontend]]
name = "web"
listen = ["127.0.0.1:0"]
mode = "http"
backlog = 4096
default_backend = "app"

[[backend]]
name = "app"
timeouts = {{ server = "20s" }}
servers = [{{ name = "o", address = "{origin}" }}]
"#
    )
}

/// An HTTP origin that answers each request with 200 `ok`, on a connection per
/// request; with `barrier`, it holds every answer until that many requests are
/// in at once.
async fn origin(barrier: Option<usize>) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let waiting = Arc::new(AtomicUsize::new(0));
    let all_in = Arc::new(Notify::new());
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let (waiting, all_in) = (waiting.clone(), all_in.clone());
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                if let Some(n) = barrier {
                    let notified = all_in.notified();
                    if waiting.fetch_add(1, Ordering::SeqCst) + 1 >= n {
                        all_in.notify_waiters();
                    } else {
                        notified.await;
                    }
                }
                let _ = s
                    .write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                    )
                    .await;
            });
        }
    });
    addr
}

/// Open `n` client connections first, then send a request on each; the
/// statuses of the answers.
async fn clients(addr: SocketAddr, n: usize) -> Vec<u16> {
    let mut conns = Vec::with_capacity(n);
    for _ in 0..n {
        conns.push(TcpStream::connect(addr).await.unwrap());
    }
    let tasks: Vec<_> = conns
        .into_iter()
        .map(|mut c| {
            tokio::spawn(async move {
                c.write_all(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
                    .await
                    .ok()?;
                let mut out = Vec::new();
                c.read_to_end(&mut out).await.ok()?;
                String::from_utf8_lossy(&out)
                    .split(' ')
                    .nth(1)
                    .and_then(|s| s.parse().ok())
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.unwrap().unwrap_or(0));
    }
    statuses
}

fn multi_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// This test process holds both ends of every connection: it needs the room.
fn room_for_the_test() -> Option<u64> {
    let (_, soft, hard) = fulcrum::fdlimit::raise();
    if soft < 4 * CLIENTS as u64 {
        println!(
            "skipped: the hard file-descriptor limit ({hard:?}) is too low for {CLIENTS} clients"
        );
        return None;
    }
    hard.or(Some(fulcrum::fdlimit::CAP))
}

#[test]
fn with_1024_descriptors_the_excess_waits_instead_of_failing() {
    if room_for_the_test().is_none() {
        return;
    }
    let rt = multi_thread();
    rt.block_on(async {
        let o = origin(None).await;
        let conf = write_config("fd-1024", "web.toml", &http_config(o));
        let d = run_with("ulimit -n 1024 &&", &conf, 1);
        let web = d.addrs[0];
        let statuses = tokio::time::timeout(Duration::from_secs(60), clients(web, CLIENTS))
            .await
            .expect("every client answered in time");
        let ok = statuses.iter().filter(|s| **s == 200).count();
        assert_eq!(ok, CLIENTS, "statuses other than 200: {:?}", {
            let mut bad: Vec<_> = statuses.iter().filter(|s| **s != 200).collect();
            bad.dedup();
            bad
        });
        let log = d.stderr();
        assert!(
            log.contains("file descriptors: soft limit 1024 (was 1024), hard limit 1024; maxconn 345 (derived from the limit)"),
            "{log}"
        );
        assert!(!log.contains("accept failed"), "{log}");
    });
}

#[test]
fn with_a_higher_hard_limit_all_clients_are_served_at_once() {
    let Some(hard) = room_for_the_test() else {
        return;
    };
    let rt = multi_thread();
    rt.block_on(async {
        // The origin answers nobody until all of them are in: only a daemon
        // holding all the connections at once gets through.
        let o = origin(Some(CLIENTS)).await;
        let conf = write_config("fd-raise", "web.toml", &http_config(o));
        let d = run_with("ulimit -Sn 1024 &&", &conf, 1);
        let statuses = tokio::time::timeout(Duration::from_secs(60), clients(d.addrs[0], CLIENTS))
            .await
            .expect("every client answered in time");
        assert!(statuses.iter().all(|s| *s == 200));
        let log = d.stderr();
        assert!(
            log.contains(&format!(
                "file descriptors: soft limit {} (was 1024)",
                hard.min(fulcrum::fdlimit::CAP)
            )),
            "{log}"
        );
    });
}
