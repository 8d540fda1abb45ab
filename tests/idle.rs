//! Idle HTTP client connections parked outside the runtime (`global.idle_park_after`),
//! through real sockets: they are parked, resumed by their next bytes, timed out
//! (408 before a first request, a plain close between requests), released when
//! the client resets, and closed when the daemon stops (gracefully: those
//! between requests; forced: all).

use fulcrum_testkit as support;

use std::time::{Duration, Instant};

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn daemon(o: &Origin, park: &str, req: &str, ka: &str) -> fulcrum::daemon::Running {
    Conf::new()
        .global("idle_park_after", park)
        .global("grace", "200ms")
        .frontend(Frontend::web().timeouts([("http_request", req), ("http_keepalive", ka)]))
        .backend(Backend::app(o.addr))
        .start()
}

fn front(d: &fulcrum::daemon::Running) -> fulcrum::stats::FrontendStats {
    d.stats().frontend("web").unwrap().clone()
}

fn req(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").into_bytes()
}

#[tokio::test]
async fn parked_keepalive_connections_serve_their_next_requests() {
    bounded(20, async {
        let o = Origin::http("a", "").await;
        let d = daemon(&o, "20ms", "5s", "10s");
        let addr = d.addr("web").unwrap();
        let mut conns = Vec::new();
        for i in 0..50 {
            let mut c = TcpStream::connect(addr).await.unwrap();
            let r = roundtrip(&mut c, &req(&format!("/first/{i}")))
                .await
                .unwrap();
            assert_eq!((r.status, r.text().as_str()), (200, "a\n"));
            conns.push(c);
        }
        eventually(5, "all 50 parked", || front(&d).http_idle_parked == 50).await;
        assert_eq!(front(&d).conn_cur, 50);
        // Each resumes on its own next request, in a different order.
        for (i, c) in conns.iter_mut().enumerate().rev() {
            let r = roundtrip(c, &req(&format!("/second/{i}"))).await.unwrap();
            assert_eq!((r.status, r.text().as_str()), (200, "a\n"));
        }
        let heads = o.heads();
        for i in 0..50 {
            for p in ["first", "second"] {
                let line = format!("GET /{p}/{i} HTTP/1.1");
                assert_eq!(
                    heads.iter().filter(|h| h.starts_with(&line)).count(),
                    1,
                    "{line}"
                );
            }
        }
        // Idle again after the second answer: parked again.
        eventually(5, "parked again", || front(&d).http_idle_parks == 100).await;
        let f = front(&d);
        assert_eq!(
            (f.http_idle_parked, f.http_requests, f.conn_cur),
            (50, 100, 50)
        );
        drop(conns);
        eventually(5, "closed", || {
            let f = front(&d);
            f.conn_cur == 0 && f.http_idle_parked == 0
        })
        .await;
    })
    .await;
}

#[tokio::test]
async fn a_silent_new_connection_is_parked_then_served_pipelined() {
    bounded(20, async {
        let o = Origin::http("a", "").await;
        let d = daemon(&o, "20ms", "5s", "10s");
        let mut c = TcpStream::connect(d.addr("web").unwrap()).await.unwrap();
        eventually(5, "parked", || front(&d).http_idle_parked == 1).await;
        // Two requests in one write: both answered, in order.
        let mut two = req("/one");
        two.extend_from_slice(&req("/two"));
        c.write_all(&two).await.unwrap();
        for _ in 0..2 {
            let r = read_response(&mut c).await.unwrap();
            assert_eq!(r.status, 200);
        }
        let heads = o.heads();
        assert!(heads[0].starts_with("GET /one "), "{heads:?}");
        assert!(heads[1].starts_with("GET /two "), "{heads:?}");
        assert_eq!(front(&d).http_request_timeouts, 0);
    })
    .await;
}

#[tokio::test]
async fn a_parked_connection_without_a_request_gets_408_at_http_request() {
    bounded(20, async {
        let o = Origin::http("a", "").await;
        let d = daemon(&o, "20ms", "400ms", "10s");
        let t = Instant::now();
        let mut c = TcpStream::connect(d.addr("web").unwrap()).await.unwrap();
        eventually(5, "parked", || front(&d).http_idle_parked == 1).await;
        let r = read_response(&mut c).await.expect("a 408");
        assert!(
            t.elapsed() >= Duration::from_millis(350),
            "{:?}",
            t.elapsed()
        );
        assert_eq!(r.status, 408);
        assert_eq!(r.header("connection").as_deref(), Some("close"));
        let mut rest = Vec::new();
        let _ = c.read_to_end(&mut rest).await;
        assert!(rest.is_empty());
        eventually(5, "released", || front(&d).conn_cur == 0).await;
        let f = front(&d);
        assert_eq!(f.http_request_timeouts, 1);
        assert_eq!(f.http_responses[3], 1);
        assert_eq!(f.http_idle_parked, 0);
        assert_eq!(o.count(), 0);
    })
    .await;
}

#[tokio::test]
async fn a_parked_keepalive_connection_closes_at_http_keepalive() {
    bounded(20, async {
        let o = Origin::http("a", "").await;
        let d = daemon(&o, "20ms", "5s", "400ms");
        let mut c = TcpStream::connect(d.addr("web").unwrap()).await.unwrap();
        assert_eq!(roundtrip(&mut c, &req("/")).await.unwrap().status, 200);
        eventually(5, "parked", || front(&d).http_idle_parked == 1).await;
        // Closed without a reply: no request was under way.
        let mut rest = Vec::new();
        let n = c.read_to_end(&mut rest).await.unwrap_or(0);
        assert_eq!(n, 0);
        eventually(5, "released", || front(&d).conn_cur == 0).await;
        let f = front(&d);
        assert_eq!((f.http_request_timeouts, f.http_idle_parked), (0, 0));
        assert_eq!(f.http_responses[3], 0);
    })
    .await;
}

#[tokio::test]
async fn a_reset_or_closed_parked_connection_is_released() {
    bounded(20, async {
        let o = Origin::http("a", "").await;
        let d = daemon(&o, "20ms", "5s", "10s");
        let addr = d.addr("web").unwrap();
        let reset = TcpStream::connect(addr).await.unwrap();
        let mut closed = TcpStream::connect(addr).await.unwrap();
        assert_eq!(roundtrip(&mut closed, &req("/")).await.unwrap().status, 200);
        eventually(5, "both parked", || front(&d).http_idle_parked == 2).await;
        socket2::SockRef::from(&reset)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop(reset);
        closed.shutdown().await.unwrap();
        eventually(5, "both released", || {
            let f = front(&d);
            f.conn_cur == 0 && f.http_idle_parked == 0
        })
        .await;
        assert_eq!(front(&d).http_request_timeouts, 0);
    })
    .await;
}

#[tokio::test]
async fn a_graceful_stop_closes_idle_keepalive_connections_at_once() {
    for park in ["20ms", "0s"] {
        bounded(20, async {
            let o = Origin::http("a", "").await;
            let d = daemon(&o, park, "30s", "30s");
            let mut c = TcpStream::connect(d.addr("web").unwrap()).await.unwrap();
            assert_eq!(roundtrip(&mut c, &req("/")).await.unwrap().status, 200);
            if park != "0s" {
                eventually(5, "parked", || front(&d).http_idle_parked == 1).await;
            }
            // Idle between requests: closed by the graceful stop, so shutdown
            // does not wait for the grace period (200 ms) to end.
            let stopped = d.shutdown().await;
            assert!(stopped.drained, "park = {park}");
            let mut rest = Vec::new();
            let n = c.read_to_end(&mut rest).await.unwrap_or(0);
            assert_eq!(n, 0);
        })
        .await;
    }
}

#[tokio::test]
async fn a_forced_stop_closes_connections_still_waiting_for_a_first_request() {
    bounded(20, async {
        let o = Origin::http("a", "").await;
        let d = daemon(&o, "20ms", "30s", "30s");
        let mut c = TcpStream::connect(d.addr("web").unwrap()).await.unwrap();
        eventually(5, "parked", || front(&d).http_idle_parked == 1).await;
        // Accepted but no request yet: kept through the grace period (its
        // request may be on the way), then closed by the forced stop.
        let stopped = d.shutdown().await;
        assert!(!stopped.drained);
        let mut rest = Vec::new();
        let n = c.read_to_end(&mut rest).await.unwrap_or(0);
        assert_eq!(n, 0);
    })
    .await;
}

#[tokio::test]
async fn parking_can_be_turned_off() {
    bounded(20, async {
        let o = Origin::http("a", "").await;
        let d = daemon(&o, "0s", "5s", "10s");
        // The control: the same, parking after 20 ms.
        let control = daemon(&o, "20ms", "5s", "10s");
        let mut c = TcpStream::connect(d.addr("web").unwrap()).await.unwrap();
        assert_eq!(roundtrip(&mut c, &req("/")).await.unwrap().status, 200);
        let mut k = TcpStream::connect(control.addr("web").unwrap())
            .await
            .unwrap();
        assert_eq!(roundtrip(&mut k, &req("/")).await.unwrap().status, 200);
        // Idle at least as long as the control's connection, which is parked.
        eventually(5, "the control parked", || {
            front(&control).http_idle_parks == 1
        })
        .await;
        assert_eq!(front(&d).http_idle_parks, 0);
        assert_eq!(roundtrip(&mut c, &req("/")).await.unwrap().status, 200);
        assert_eq!(front(&d).http_idle_parks, 0);
    })
    .await;
}

#[tokio::test]
async fn the_http_example_parks_idle_connections() {
    bounded(20, async {
        let mut rec = Vec::new();
        for name in ["c1", "c2", "c3"] {
            rec.push(Origin::http(name, "").await);
        }
        let addrs: Vec<_> = rec.iter().map(|r| r.addr).collect();
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/config/examples/http.toml");
        let cfg =
            fulcrum::config::parse(path, &localize_addrs("config/examples/http.toml", &addrs))
                .unwrap();
        assert_eq!(cfg.global.idle_park_after, Some(Duration::from_millis(100)));
        let d = fulcrum::daemon::start(support::quiet(cfg, "")).unwrap();
        let mut c = TcpStream::connect(d.addr("www").unwrap()).await.unwrap();
        assert_eq!(roundtrip(&mut c, &req("/a")).await.unwrap().status, 200);
        let parked = || d.stats().frontend("www").unwrap().http_idle_parked;
        eventually(5, "parked", || parked() == 1).await;
        assert_eq!(roundtrip(&mut c, &req("/b")).await.unwrap().status, 200);
    })
    .await;
}

/// `defer_accept` (on by default in http mode, TCP_DEFER_ACCEPT): the kernel
/// holds a connection that has sent nothing (its server end stays in
/// SYN_RECV) instead of handing it over; its first bytes hand it over and it
/// is served. With `defer_accept = false` it is accepted at once.
#[tokio::test]
async fn http_listeners_defer_accepting_until_the_first_bytes() {
    bounded(20, async {
        let o = Origin::http("a", "").await;
        let d = Conf::new()
            .frontend(Frontend::web())
            .frontend(Frontend::http("eager").to("app").set("defer_accept", false))
            .backend(Backend::app(o.addr))
            .start();
        let conns = |f: &str| d.stats().frontend(f).unwrap().conn_total;
        let web = d.addr("web").unwrap();
        let mut c = TcpStream::connect(web).await.unwrap();
        let me = c.local_addr().unwrap().port();
        eventually(5, "the deferred connection's server end is seen", || {
            tcp_state(web.port(), me).is_some()
        })
        .await;
        assert_eq!(tcp_state(web.port(), me), Some(0x03), "held in SYN_RECV");
        assert_eq!(conns("web"), 0, "not handed to the daemon yet");
        c.write_all(&req("/")).await.unwrap();
        assert_eq!(read_response(&mut c).await.unwrap().status, 200);
        assert_eq!(conns("web"), 1);

        let eager = d.addr("eager").unwrap();
        let e = TcpStream::connect(eager).await.unwrap();
        let me = e.local_addr().unwrap().port();
        eventually(5, "the eager frontend accepts a silent connection", || {
            conns("eager") == 1
        })
        .await;
        assert_eq!(tcp_state(eager.port(), me), Some(0x01), "established");
        drop(d);
    })
    .await;
}

/// Under `defer_accept`, a new connection the kernel hands over without a
/// byte has been silent for a second already: it is parked at once, not
/// after `idle_park_after` (10 s here), and still served when it speaks.
#[tokio::test]
async fn a_deferred_silent_connection_is_parked_at_once() {
    bounded(20, async {
        let o = Origin::http("a", "").await;
        let d = daemon(&o, "10s", "8s", "10s");
        let mut c = TcpStream::connect(d.addr("web").unwrap()).await.unwrap();
        eventually(5, "parked well before idle_park_after", || {
            front(&d).http_idle_parked == 1
        })
        .await;
        c.write_all(&req("/late")).await.unwrap();
        assert_eq!(read_response(&mut c).await.unwrap().status, 200);
        assert_eq!(front(&d).http_idle_parked, 0);
    })
    .await;
}
