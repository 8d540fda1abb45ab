//! mode "http" through real sockets: what the client gets and what the origin saw.

use fulcrum_testkit as support;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Frontend `web` (http) to backend `app`, with these request and
/// keep-alive timeouts.
fn web_front(http_request: &str, http_keepalive: &str) -> Frontend {
    Frontend::http("web").to("app").timeouts([
        ("client", "5s"),
        ("http_request", http_request),
        ("http_keepalive", http_keepalive),
    ])
}

/// Backend `app`: server `a`, one retry, this server timeout.
fn app(a: SocketAddr, server: &str) -> Backend {
    Backend::new("app")
        .timeouts([("connect", "1s"), ("server", server)])
        .set("retries", 1)
        .server("a", a)
}

fn web(a: SocketAddr, server: &str) -> fulcrum::daemon::Running {
    Conf::new()
        .frontend(web_front("500ms", "2s"))
        .backend(app(a, server))
        .start()
}

/// Send raw bytes, read until the proxy closes (or `until` appears), return the text.
async fn raw(addr: SocketAddr, req: &[u8]) -> String {
    let mut c = TcpStream::connect(addr).await.unwrap();
    c.write_all(req).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), c.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

const OK: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nx-server: a\r\n\r\nok";

#[tokio::test]
async fn get_is_proxied_with_forwarded_headers() {
    bounded(10, async {
        let o = Origin::replying(OK, Duration::ZERO).await;
        let d = web(o.addr, "5s");
        let resp = raw(
            d.addr("web").unwrap(),
            b"GET /p?q=1 HTTP/1.1\r\nHost: example.com\r\nConnection: close, X-Secret\r\nX-Secret: 1\r\nX-Forwarded-For: 203.0.113.1\r\nUpgrade: h2c\r\n\r\n",
        )
        .await;
        assert!(resp.starts_with("HTTP/1.1 200 OK\r\n"), "{resp}");
        assert!(resp.contains("x-server: a\r\n"));
        assert!(resp.contains("connection: close\r\n"));
        assert!(resp.ends_with("\r\n\r\nok"));
        let seen = o.seen();
        assert_eq!(
            seen[0],
            "GET /p?q=1 HTTP/1.1\r\nhost: example.com\r\nx-forwarded-for: 203.0.113.1, 127.0.0.1\r\nx-forwarded-proto: http\r\n\r\n"
        );
        let st = d.stats();
        let f = st.frontend("web").unwrap();
        assert_eq!((f.http_requests, f.http_responses[1]), (1, 1));
    })
    .await;
}

#[tokio::test]
async fn keep_alive_and_pipelining_on_the_client_side() {
    bounded(10, async {
        let o = Origin::replying(OK, Duration::ZERO).await;
        let d = web(o.addr, "5s");
        let mut c = TcpStream::connect(d.addr("web").unwrap()).await.unwrap();
        // Two pipelined requests in one write, then a third later on the same connection.
        c.write_all(b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\n")
            .await
            .unwrap();
        let one = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nx-server: a\r\n\r\nok";
        let mut buf = vec![0u8; one.len() * 2];
        c.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf[..one.len()], one);
        assert_eq!(&buf[one.len()..], one);
        c.write_all(b"GET /3 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut rest = Vec::new();
        c.read_to_end(&mut rest).await.unwrap();
        assert!(String::from_utf8_lossy(&rest).starts_with("HTTP/1.1 200 OK"));
        let paths: Vec<String> = o
            .seen()
            .iter()
            .map(|r| r.split(' ').nth(1).unwrap().to_string())
            .collect();
        assert_eq!(paths, ["/1", "/2", "/3"]);
        assert_eq!(d.stats().frontend("web").unwrap().conn_total, 1);
    })
    .await;
}

#[tokio::test]
async fn bodies_stream_with_length_and_chunked_framing() {
    bounded(10, async {
        let o = Origin::replying(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\nX-T: 1\r\n\r\n",
            Duration::ZERO,
        )
        .await;
        let d = web(o.addr, "5s");
        let resp = raw(
            d.addr("web").unwrap(),
            b"POST /up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n4\r\nwiki\r\n0\r\n\r\n",
        )
        .await;
        // Chunked bodies go out in canonical form: the extension `;x=y` is dropped.
        assert!(resp.ends_with("\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\nX-T: 1\r\n\r\n"), "{resp}");
        let up = &o.seen()[0];
        assert!(up.contains("\r\ntransfer-encoding: chunked\r\n"), "{up}");
        assert!(up.ends_with("x-forwarded-proto: http\r\n\r\n4\r\nwiki\r\n0\r\n\r\n"), "{up}");
        let resp = raw(
            d.addr("web").unwrap(),
            b"PUT /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
        )
        .await;
        assert!(resp.starts_with("HTTP/1.1 200 OK"));
        assert!(o.seen()[1].ends_with("\r\n\r\nhello"));
    })
    .await;
}

#[tokio::test]
async fn smuggling_shapes_are_rejected_and_never_reach_the_origin() {
    bounded(20, async {
        let o = Origin::replying(OK, Duration::ZERO).await;
        let d = web(o.addr, "5s");
        let cases: &[(&[u8], &str, &str)] = &[
            (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n", "400", "cl_and_te"),
            (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 40\r\n\r\nx", "400", "bad_content_length"),
            (b"GET / HTTP/1.1\nHost: a\n\n", "400", "bare_crlf"),
            (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n", "501", "unknown_coding"),
            (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", "400", "duplicate_host"),
            (b"GET / HTTP/1.1\r\n\r\n", "400", "missing_host"),
            (b"GET / HTTP/1.1\r\nHost : a\r\n\r\n", "400", "malformed"),
        ];
        for (req, status, _) in cases {
            let resp = raw(d.addr("web").unwrap(), req).await;
            assert!(resp.starts_with(&format!("HTTP/1.1 {status} ")), "{resp}");
            assert!(resp.contains("connection: close"));
        }
        // A chunked body with a bad chunk size: the head passed, the body did not.
        let resp = raw(
            d.addr("web").unwrap(),
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n",
        )
        .await;
        assert!(resp.starts_with("HTTP/1.1 400 "), "{resp}");
        // Once the daemon closed every client connection, nothing more can
        // reach the origin from them.
        eventually(5, "every client connection closed", || {
            d.stats().frontend("web").unwrap().conn_cur == 0
        })
        .await;
        // The origin records the cut request when it sees the daemon close
        // that connection, which may come just after the client side closed.
        eventually(5, "the origin saw the cut request", || !o.seen().is_empty()).await;
        assert!(o.seen().iter().all(|r| !r.contains("smuggled")));
        assert_eq!(o.seen().len(), 1, "only the last request's head was forwarded");
        let st = d.stats();
        let rejected = &st.frontend("web").unwrap().http_rejected;
        for (_, _, class) in cases {
            assert!(rejected.iter().any(|(c, n)| c == class && *n == 1), "{class}: {rejected:?}");
        }
    })
    .await;
}

#[tokio::test]
async fn server_errors_map_to_502_503_504() {
    bounded(10, async {
        let garbage = Origin::replying(
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nx",
            Duration::ZERO,
        )
        .await;
        let d = web(garbage.addr, "5s");
        let resp = raw(d.addr("web").unwrap(), b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").await;
        assert!(resp.starts_with("HTTP/1.1 502 "), "{resp}");
        assert_eq!(d.stats().backend("app").unwrap().http_bad_responses, 1);

        let slow = Origin::replying(OK, Duration::from_secs(3)).await;
        let d = web(slow.addr, "300ms");
        let resp = raw(d.addr("web").unwrap(), b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").await;
        assert!(resp.starts_with("HTTP/1.1 504 "), "{resp}");
        assert_eq!(d.stats().backend("app").unwrap().http_server_timeouts, 1);

        let d = web(dead_addr().await, "5s");
        let resp = raw(d.addr("web").unwrap(), b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").await;
        assert!(resp.starts_with("HTTP/1.1 503 "), "{resp}");
        let st = d.stats();
        let b = st.backend("app").unwrap();
        assert_eq!((b.no_server, b.connect_errors, b.retries), (1, 2, 1));
        assert_eq!(st.frontend("web").unwrap().http_responses[4], 1);
    })
    .await;
}

#[tokio::test]
async fn slowloris_is_cut_with_408_within_http_request() {
    bounded(10, async {
        let o = Origin::replying(OK, Duration::ZERO).await;
        let d = web(o.addr, "5s");
        let mut c = TcpStream::connect(d.addr("web").unwrap()).await.unwrap();
        // One header byte every 100 ms: each byte arrives, the head never completes.
        let started = std::time::Instant::now();
        let mut out = Vec::new();
        for b in b"GET / HTTP/1.1\r\nHost: a\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
            .iter()
        {
            if c.write_all(&[*b]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            if started.elapsed() > Duration::from_secs(2) {
                break;
            }
        }
        let _ = c.read_to_end(&mut out).await;
        let text = String::from_utf8_lossy(&out);
        assert!(text.starts_with("HTTP/1.1 408 "), "{text}");
        assert_eq!(d.stats().frontend("web").unwrap().http_request_timeouts, 1);
        assert!(o.seen().is_empty());
    })
    .await;
}

#[tokio::test]
async fn fulcrum_origin_and_head_requests() {
    bounded(10, async {
        let o = fulcrum::origin::spawn("127.0.0.1:0".parse().unwrap(), fulcrum::origin::OriginOpts::http("a"))
            .await
            .unwrap();
        let d = web(o.addr, "5s");
        let resp = raw(d.addr("web").unwrap(), b"GET /hello HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").await;
        assert!(resp.ends_with("\r\n\r\na GET /hello\n"), "{resp}");
        // HEAD: the response has a Content-Length but no body; keep-alive goes on.
        let mut c = TcpStream::connect(d.addr("web").unwrap()).await.unwrap();
        c.write_all(b"HEAD /h HTTP/1.1\r\nHost: a\r\n\r\nGET /g HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut out = Vec::new();
        c.read_to_end(&mut out).await.unwrap();
        let text = String::from_utf8_lossy(&out);
        assert_eq!(text.matches("HTTP/1.1 200 OK").count(), 2, "{text}");
        assert!(text.ends_with("a GET /g\n"), "{text}");
    })
    .await;
}

#[tokio::test]
async fn server_connections_are_kept_alive_and_reused() {
    bounded(10, async {
        let o = fulcrum::origin::spawn(
            "127.0.0.1:0".parse().unwrap(),
            fulcrum::origin::OriginOpts::http("a"),
        )
        .await
        .unwrap();
        let d = web(o.addr, "5s");
        // Five clients, one after the other, each with its own connection.
        for i in 0..5 {
            let resp = raw(
                d.addr("web").unwrap(),
                format!("GET /{i} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").as_bytes(),
            )
            .await;
            assert!(resp.ends_with(&format!("a GET /{i}\n")), "{resp}");
        }
        // The origin saw one connection; fulcrum reused it four times.
        assert_eq!(o.connections.load(std::sync::atomic::Ordering::Relaxed), 1);
        assert_eq!(o.hits.load(std::sync::atomic::Ordering::Relaxed), 5);
        let st = d.stats();
        let b = st.backend("app").unwrap();
        assert_eq!((b.conn_total, b.http_reused), (1, 4));
    })
    .await;
}

#[tokio::test]
async fn a_reused_connection_the_server_dropped_is_replayed_for_idempotent_requests() {
    bounded(10, async {
        // Answers the first request on a connection with keep-alive, then drops the
        // connection without answering when a second request arrives on it.
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let conns = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let c2 = conns.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                c2.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    let mut got = Vec::new();
                    let mut answered = false;
                    loop {
                        let n = match s.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => n,
                        };
                        got.extend_from_slice(&buf[..n]);
                        if !got.windows(4).any(|w| w == b"\r\n\r\n") {
                            continue;
                        }
                        if answered {
                            let _ = socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO));
                            return;
                        }
                        answered = true;
                        got.clear();
                        s.write_all(OK).await.unwrap();
                    }
                });
            }
        });
        let d = web(addr, "5s");
        for _ in 0..2 {
            let resp = raw(
                d.addr("web").unwrap(),
                b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
            )
            .await;
            assert!(resp.starts_with("HTTP/1.1 200 OK"), "{resp}");
        }
        let st = d.stats();
        let b = st.backend("app").unwrap();
        assert_eq!((b.http_reused, b.retries, b.http_bad_responses), (1, 1, 0));
        assert_eq!(conns.load(std::sync::atomic::Ordering::Relaxed), 2);

        // A POST is not replayed on a reused connection: it never goes on one.
        let resp = raw(
            d.addr("web").unwrap(),
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nConnection: close\r\n\r\nx",
        )
        .await;
        assert!(resp.starts_with("HTTP/1.1 200 OK"), "{resp}");
        assert_eq!(conns.load(std::sync::atomic::Ordering::Relaxed), 3);
    })
    .await;
}

/// Answers a WebSocket handshake with 101 and then echoes bytes; answers any other
/// request with a 101 too (which fulcrum must refuse).
async fn websocket_origin() -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let heads: Arc<Mutex<Vec<String>>> = Arc::default();
    let h2 = heads.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let heads = h2.clone();
            tokio::spawn(async move {
                let mut got = Vec::new();
                let mut buf = [0u8; 4096];
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                let end = got.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
                heads
                    .lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&got[..end]).into_owned());
                let rest = got[end..].to_vec();
                s.write_all(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: x\r\n\r\n")
                    .await
                    .unwrap();
                s.write_all(&rest).await.unwrap();
                loop {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            if s.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    (addr, heads)
}

#[tokio::test]
async fn websocket_upgrade_becomes_a_tunnel_only_after_101() {
    bounded(10, async {
        let (origin, heads) = websocket_origin().await;
        let d = web(origin, "5s");
        let mut c = TcpStream::connect(d.addr("web").unwrap()).await.unwrap();
        c.write_all(b"GET /chat HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
            .await
            .unwrap();
        let mut head = Vec::new();
        let mut b = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            c.read_exact(&mut b).await.unwrap();
            head.push(b[0]);
        }
        let head = String::from_utf8(head).unwrap();
        assert!(head.starts_with("HTTP/1.1 101 Switching Protocols\r\n"), "{head}");
        assert!(head.contains("upgrade: websocket\r\n") && head.contains("connection: upgrade\r\n"), "{head}");
        for msg in [&b"frame one"[..], b"frame two", &[0u8, 1, 2, 255]] {
            c.write_all(msg).await.unwrap();
            let mut echo = vec![0u8; msg.len()];
            c.read_exact(&mut echo).await.unwrap();
            assert_eq!(echo, msg);
        }
        let seen = heads.lock().unwrap()[0].clone();
        assert!(seen.contains("connection: upgrade\r\nupgrade: websocket\r\n"), "{seen}");
        assert!(seen.contains("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"), "{seen}");

        // A 101 the client did not ask for (h2c is stripped, so this is a plain GET).
        let resp = raw(
            d.addr("web").unwrap(),
            b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: h2c\r\nConnection: Upgrade, HTTP2-Settings\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n",
        )
        .await;
        assert!(resp.starts_with("HTTP/1.1 502 "), "{resp}");
        let h2c = heads.lock().unwrap()[1].clone();
        assert!(!h2c.to_ascii_lowercase().contains("upgrade") && !h2c.contains("HTTP2-Settings"), "{h2c}");
    })
    .await;
}

#[tokio::test]
async fn expect_100_continue_is_answered_by_the_proxy() {
    bounded(10, async {
        let o = Origin::replying(OK, Duration::ZERO).await;
        let d = web(o.addr, "5s");
        let mut c = TcpStream::connect(d.addr("web").unwrap()).await.unwrap();
        c.write_all(b"PUT /f HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut interim = [0u8; 25];
        c.read_exact(&mut interim).await.unwrap();
        assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");
        c.write_all(b"data").await.unwrap();
        let mut rest = Vec::new();
        c.read_to_end(&mut rest).await.unwrap();
        assert!(String::from_utf8_lossy(&rest).starts_with("HTTP/1.1 200 OK"));
        let seen = &o.seen()[0];
        assert!(!seen.to_ascii_lowercase().contains("expect"), "{seen}");
        assert!(seen.ends_with("\r\n\r\ndata"), "{seen}");
    })
    .await;
}

#[tokio::test]
async fn sixty_four_mib_each_way_streams_through() {
    sixty_four_mib_each_way(true).await;
}

#[tokio::test]
async fn sixty_four_mib_each_way_streams_through_copying() {
    sixty_four_mib_each_way(false).await;
}

/// With `splice` the bodies past the first buffer go through kernel pipes;
/// without, through a 64 KiB buffer.
async fn sixty_four_mib_each_way(splice: bool) {
    bounded(60, async {
        const LEN: usize = 64 << 20;
        // Reads a Content-Length upload to the end (checksumming it), then answers
        // with a 64 MiB body of its own.
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let upload_sum = Arc::new(Mutex::new(None));
        let us = upload_sum.clone();
        tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut got = Vec::new();
            let mut buf = vec![0u8; 1 << 16];
            while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = s.read(&mut buf).await.unwrap();
                got.extend_from_slice(&buf[..n]);
            }
            let end = got.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
            let mut sum = Checksum::default();
            sum.update(&got[end..]);
            let mut n = got.len() - end;
            while n < LEN {
                let k = s.read(&mut buf).await.unwrap();
                sum.update(&buf[..k]);
                n += k;
            }
            *us.lock().unwrap() = Some((n, sum.0));
            s.write_all(format!("HTTP/1.1 200 OK\r\ncontent-length: {LEN}\r\n\r\n").as_bytes())
                .await
                .unwrap();
            s.write_all(&pattern(LEN, 5)).await.unwrap();
        });
        let d = Conf::new()
            .global("splice", splice)
            .frontend(web_front("500ms", "2s"))
            .backend(app(addr, "10s"))
            .start();
        let data = pattern(LEN, 9);
        let mut want_up = Checksum::default();
        want_up.update(&data);
        let c = TcpStream::connect(d.addr("web").unwrap()).await.unwrap();
        let (mut r, mut w) = c.into_split();
        tokio::spawn(async move {
            w.write_all(
                format!("POST /big HTTP/1.1\r\nHost: a\r\nContent-Length: {LEN}\r\n\r\n")
                    .as_bytes(),
            )
            .await
            .unwrap();
            w.write_all(&data).await.unwrap();
            // Keep the write half open until the response is read.
            tokio::time::sleep(Duration::from_secs(30)).await;
        });
        let mut head = Vec::new();
        let mut b = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            r.read_exact(&mut b).await.unwrap();
            head.push(b[0]);
        }
        assert!(String::from_utf8_lossy(&head).contains(&format!("content-length: {LEN}")));
        let mut got = Checksum::default();
        let mut n = 0;
        let mut buf = vec![0u8; 1 << 16];
        while n < LEN {
            let k = r.read(&mut buf).await.unwrap();
            assert!(k > 0);
            got.update(&buf[..k]);
            n += k;
        }
        let mut want_down = Checksum::default();
        want_down.update(&pattern(LEN, 5));
        assert_eq!(got.0, want_down.0, "download altered");
        assert_eq!(
            *upload_sum.lock().unwrap(),
            Some((LEN, want_up.0)),
            "upload altered"
        );
        let f = d.stats().frontend("web").unwrap().clone();
        assert_eq!((f.bytes_in, f.bytes_out), (LEN as u64, LEN as u64));
    })
    .await;
}

#[tokio::test]
async fn limits_forwarded_and_the_rejected_request_log() {
    bounded(10, async {
        let o = Origin::replying(OK, Duration::ZERO).await;
        let d = Conf::new()
            .frontend(
                Frontend::http("web")
                    .to("app")
                    .set("forwarded", true)
                    .set("x_forwarded", false)
                    .set("max_headers", 5),
            )
            .backend(Backend::new("app").server("a", o.addr))
            .start();
        let resp = raw(
            d.addr("web").unwrap(),
            b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
        assert_eq!(
            o.seen()[0],
            "GET / HTTP/1.1\r\nhost: a\r\nforwarded: for=127.0.0.1;proto=http\r\n\r\n"
        );
        let six = b"GET /six HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\nE: 5\r\n\r\n";
        let resp = raw(d.addr("web").unwrap(), six).await;
        assert!(resp.starts_with("HTTP/1.1 431 "), "{resp}");
        let st = d.stats();
        let f = st.frontend("web").unwrap();
        assert_eq!(f.last_rejected.len(), 1);
        let r = &f.last_rejected[0];
        assert_eq!((r.class, r.status), ("too_many_headers", 431));
        assert_eq!(r.head, six);
        assert_eq!(r.client.ip(), std::net::IpAddr::from([127, 0, 0, 1]));
    })
    .await;
}

#[tokio::test]
async fn server_maxconn_queues_requests_then_503() {
    bounded(10, async {
        let o = Origin::replying(OK, Duration::from_millis(800)).await;
        let d = Conf::new()
            .frontend(Frontend::http("web").to("app"))
            .backend(
                Backend::new("app")
                    .timeouts([("queue", "300ms")])
                    .server_with("a", o.addr, table([("maxconn", 1)])),
            )
            .start();
        let addr = d.addr("web").unwrap();
        let slow = tokio::spawn(async move {
            raw(
                addr,
                b"GET /1 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
            )
            .await
        });
        eventually(5, "first request holds the only slot", || {
            d.stats()
                .backend("app")
                .unwrap()
                .server("a")
                .unwrap()
                .conn_cur
                == 1
        })
        .await;
        let resp = raw(
            addr,
            b"GET /2 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(resp.starts_with("HTTP/1.1 503 "), "{resp}");
        assert!(slow.await.unwrap().starts_with("HTTP/1.1 200 "));
        let st = d.stats();
        let b = st.backend("app").unwrap();
        assert_eq!((b.queued_total, b.queue_timeouts), (1, 1));
        assert_eq!(o.seen().len(), 1);
    })
    .await;
}

#[tokio::test]
async fn idle_keep_alive_clients_are_closed_after_http_keepalive() {
    bounded(10, async {
        let o = Origin::replying(OK, Duration::ZERO).await;
        let d = Conf::new()
            .frontend(web_front("5s", "300ms"))
            .backend(app(o.addr, "5s"))
            .start();
        let mut c = TcpStream::connect(d.addr("web").unwrap()).await.unwrap();
        c.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
            .await
            .unwrap();
        let started = std::time::Instant::now();
        let mut out = Vec::new();
        c.read_to_end(&mut out).await.unwrap();
        assert!(String::from_utf8_lossy(&out).starts_with("HTTP/1.1 200 OK"));
        // Closed by the proxy, without a 408 (nothing of a next request had arrived).
        assert_eq!(String::from_utf8_lossy(&out).matches("HTTP/1.1").count(), 1);
        assert!(started.elapsed() < Duration::from_secs(4));
        assert_eq!(d.stats().frontend("web").unwrap().http_request_timeouts, 0);
    })
    .await;
}

#[tokio::test]
async fn http10_clients_get_http10_upstream() {
    bounded(10, async {
        let o = Origin::replying(b"HTTP/1.0 200 OK\r\n\r\nold school", Duration::ZERO).await;
        let d = web(o.addr, "5s");
        let resp = raw(d.addr("web").unwrap(), b"GET /old HTTP/1.0\r\n\r\n").await;
        assert!(resp.starts_with("HTTP/1.1 200 OK\r\n"), "{resp}");
        assert!(resp.ends_with("\r\n\r\nold school"), "{resp}");
        assert!(
            o.seen()[0].starts_with("GET /old HTTP/1.0\r\n"),
            "{:?}",
            o.seen()
        );
    })
    .await;
}

/// Hash keys taken from real requests: url_param from the query, dh from Host.
#[tokio::test]
async fn hash_keys_come_from_the_request() {
    bounded(10, async {
        let mut origins = Vec::new();
        for name in ["a", "b", "c", "d"] {
            origins.push(
                fulcrum::origin::spawn(
                    "127.0.0.1:0".parse().unwrap(),
                    fulcrum::origin::OriginOpts::http(name),
                )
                .await
                .unwrap(),
            );
        }
        let addrs: Vec<SocketAddr> = origins.iter().map(|o| o.addr).collect();
        let url_param = table([("algorithm", "url_param"), ("param", "user")]);
        let d = Conf::new()
            .frontend(Frontend::http("by_user").to("users"))
            .frontend(Frontend::http("by_host").to("sites"))
            .backend(
                Backend::new("users")
                    .set("balance", url_param)
                    .servers(&addrs),
            )
            .backend(Backend::new("sites").set("balance", "dh").servers(&addrs))
            .start();
        let ask = |fe: &'static str, target: String, host: String| {
            let addr = d.addr(fe).unwrap();
            async move {
                let req =
                    format!("GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
                let resp = raw(addr, req.as_bytes()).await;
                resp.split("\r\n\r\n")
                    .nth(1)
                    .unwrap()
                    .split(' ')
                    .next()
                    .unwrap()
                    .to_string()
            }
        };
        // url_param: one user, one server, whatever the path; users spread.
        let mut spread = std::collections::HashSet::new();
        for u in 0..12 {
            let first = ask("by_user", format!("/x?user=u{u}"), "h".into()).await;
            assert_eq!(
                ask("by_user", format!("/y/z?a=1&user=u{u}"), "h".into()).await,
                first
            );
            spread.insert(first);
        }
        assert!(spread.len() >= 2, "{spread:?}");
        // Without the parameter: wrr over the servers.
        let rotation: Vec<String> = {
            let mut v = Vec::new();
            for _ in 0..4 {
                v.push(ask("by_user", "/none".into(), "h".into()).await);
            }
            v
        };
        assert_eq!(
            rotation
                .iter()
                .collect::<std::collections::HashSet<_>>()
                .len(),
            4,
            "{rotation:?}"
        );
        // dh: the Host (case-insensitive), not the path, picks the server; an
        // absolute-form target's authority counts, not the Host header.
        let mut hosts = std::collections::HashSet::new();
        for h in 0..12 {
            let first = ask("by_host", "/a".into(), format!("site{h}.example")).await;
            assert_eq!(
                ask("by_host", "/b".into(), format!("SITE{h}.example")).await,
                first
            );
            assert_eq!(
                ask(
                    "by_host",
                    format!("http://site{h}.example/c"),
                    "elsewhere.example".into()
                )
                .await,
                first
            );
            hosts.insert(first);
        }
        assert!(hosts.len() >= 2, "{hosts:?}");
    })
    .await;
}

#[tokio::test]
async fn proxy_protocol_client_is_the_forwarded_for_address() {
    bounded(10, async {
        let o = Origin::replying(OK, Duration::ZERO).await;
        let d = Conf::new()
            .frontend(web_front("5s", "2s").set("accept_proxy", true))
            .backend(app(o.addr, "5s"))
            .start();
        let resp = raw(
            d.addr("web").unwrap(),
            b"PROXY TCP4 198.51.100.23 192.0.2.1 40000 80\r\nGET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(resp.starts_with("HTTP/1.1 200 OK"), "{resp}");
        assert!(o.seen()[0].contains("x-forwarded-for: 198.51.100.23\r\n"), "{:?}", o.seen());
        // Without a header the connection is refused and counted.
        let resp = raw(d.addr("web").unwrap(), b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").await;
        assert!(resp.is_empty());
        assert_eq!(d.stats().frontend("web").unwrap().proxy_errors, 1);
    })
    .await;
}

/// A keep-alive origin answering every request with a `len`-byte body (the
/// pattern seeded by the request's number on its connection), counting
/// connections; with `cut_at`, it sends that many body bytes and closes.
async fn big_origin(len: usize, cut_at: Option<usize>) -> (SocketAddr, Arc<Mutex<u64>>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let conns = Arc::new(Mutex::new(0u64));
    let c2 = conns.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            *c2.lock().unwrap() += 1;
            tokio::spawn(async move {
                let mut got = Vec::new();
                let mut buf = [0u8; 4096];
                for seed in 1u64.. {
                    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                        match s.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => got.extend_from_slice(&buf[..n]),
                        }
                    }
                    let end = got.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
                    got.drain(..end);
                    let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {len}\r\n\r\n");
                    let body = pattern(len, seed);
                    let body = &body[..cut_at.unwrap_or(len)];
                    if s.write_all(head.as_bytes()).await.is_err()
                        || s.write_all(body).await.is_err()
                    {
                        return;
                    }
                    if cut_at.is_some() {
                        return;
                    }
                }
            });
        }
    });
    (addr, conns)
}

#[tokio::test]
async fn spliced_bodies_keep_the_connections_alive_and_intact() {
    bounded(30, async {
        const LEN: usize = 3 << 20;
        let (addr, conns) = big_origin(LEN, None).await;
        let d = web(addr, "5s");
        let mut c = TcpStream::connect(d.addr("web").unwrap()).await.unwrap();
        for seed in 1..=3u64 {
            let r = roundtrip(&mut c, b"GET /big HTTP/1.1\r\nHost: a\r\n\r\n")
                .await
                .unwrap();
            assert_eq!(r.status, 200);
            assert!(r.body == pattern(LEN, seed), "body {seed} altered");
        }
        // One client connection, one server connection, three whole bodies.
        assert_eq!(*conns.lock().unwrap(), 1);
        let b = d.stats().backend("app").unwrap().clone();
        assert_eq!(b.http_reused, 2);
        assert_eq!(d.stats().frontend("web").unwrap().bytes_out, 3 * LEN as u64);
    })
    .await;
}

#[tokio::test]
async fn a_spliced_body_cut_by_the_server_is_cut_for_the_client() {
    bounded(30, async {
        const LEN: usize = 1 << 20;
        let (addr, conns) = big_origin(LEN, Some(300 << 10)).await;
        let d = web(addr, "5s");
        let mut c = TcpStream::connect(d.addr("web").unwrap()).await.unwrap();
        c.write_all(b"GET /big HTTP/1.1\r\nHost: a\r\n\r\n")
            .await
            .unwrap();
        // The head and what the server sent, then the end (a reset): never the
        // full length, so the client knows the body is incomplete.
        let mut all = Vec::new();
        let _ = c.read_to_end(&mut all).await;
        let end = all.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        assert!(all.len() - end < LEN, "{}", all.len() - end);
        assert_eq!(&all[end..], &pattern(LEN, 1)[..all.len() - end]);
        // The next client gets a fresh server connection (the cut one is not pooled).
        raw(
            d.addr("web").unwrap(),
            b"GET /big HTTP/1.1\r\nHost: a\r\n\r\n",
        )
        .await;
        assert_eq!(*conns.lock().unwrap(), 2);
        assert_eq!(d.stats().backend("app").unwrap().http_reused, 0);
    })
    .await;
}

#[tokio::test]
async fn an_early_answer_lingers_so_the_client_reads_it_without_a_reset() {
    bounded(20, async {
        const BODY: usize = 200_000;
        let o = Origin::replying(OK, Duration::ZERO).await;
        let d = web(o.addr, "5s");
        let c = TcpStream::connect(d.addr("web").unwrap()).await.unwrap();
        let (mut r, mut w) = c.into_split();
        // A malformed head (a space in a field name) followed by a body fulcrum
        // never reads: the 400 goes out at once, the body is still arriving.
        let writer = tokio::spawn(async move {
            w.write_all(
                format!(
                    "POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: {BODY}\r\nBad Name: x\r\n\r\n"
                )
                .as_bytes(),
            )
            .await?;
            w.write_all(&pattern(BODY, 3)).await?;
            w.shutdown().await
        });
        // The answer, then a clean end of stream (a FIN, not a reset), and the
        // client could send its whole body without an error.
        let mut all = Vec::new();
        let read = r.read_to_end(&mut all).await;
        assert!(read.is_ok(), "{read:?}");
        assert!(String::from_utf8_lossy(&all).starts_with("HTTP/1.1 400 "));
        writer
            .await
            .unwrap()
            .expect("the body went out without a reset");
        assert!(o.seen().is_empty());
        eventually(5, "closed", || {
            d.stats().frontend("web").unwrap().conn_cur == 0
        })
        .await;
    })
    .await;
}

#[tokio::test]
async fn a_response_during_a_graceful_stop_closes_its_connection() {
    bounded(20, async {
        let o = Origin::replying(OK, Duration::from_millis(400)).await;
        let d = web(o.addr, "5s");
        let mut c = TcpStream::connect(d.addr("web").unwrap()).await.unwrap();
        c.write_all(b"GET /slow HTTP/1.1\r\nHost: a\r\n\r\n")
            .await
            .unwrap();
        // The request is at the origin; the daemon is told to stop meanwhile.
        while o.seen().is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let stopping = tokio::spawn(d.shutdown());
        let r = read_response(&mut c).await.expect("the answer");
        assert_eq!(r.status, 200);
        assert_eq!(r.header("connection").as_deref(), Some("close"));
        let mut rest = Vec::new();
        assert_eq!(c.read_to_end(&mut rest).await.unwrap(), 0);
        // Nothing else was open: the stop did not need its grace period.
        assert!(stopping.await.unwrap().drained);
    })
    .await;
}
