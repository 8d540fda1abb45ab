//! Per-source limits through real sockets (`config/examples/edge.toml`, the
//! `api` and `db` frontends), sources set by PROXY headers: each limit holds
//! exactly at N, the exempt source is never limited, and time or closed
//! connections restore access.

use fulcrum_testkit as support;

use std::net::SocketAddr;
use std::time::Duration;

use fulcrum::daemon::Running;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn edge() -> (Running, Origin) {
    let o = Origin::http("app", "").await;
    let echo = Origin::start("pg", Behaviour::Echo).await;
    let addrs = [o.addr, o.addr, o.addr, echo.addr];
    let d = start(&localize_addrs("config/examples/edge.toml", &addrs), &[]);
    (d, o)
}

/// A connection that says it comes from `src`.
async fn from(addr: SocketAddr, src: &str) -> TcpStream {
    let mut c = TcpStream::connect(addr).await.unwrap();
    c.write_all(format!("PROXY TCP4 {src} 127.0.0.1 40000 8087\r\n").as_bytes())
        .await
        .unwrap();
    c
}

const GET: &[u8] = b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n";

/// Whether the daemon closed `c` without a word.
async fn closed(c: &mut TcpStream) -> bool {
    let mut b = [0u8; 64];
    matches!(
        tokio::time::timeout(Duration::from_secs(2), c.read(&mut b)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

#[tokio::test]
async fn connections_per_source_hold_exactly_at_n() {
    bounded(20, async {
        let (d, _o) = edge().await;
        let api = d.addr("api").unwrap();
        let mut open = Vec::new();
        for _ in 0..3 {
            let mut c = from(api, "192.0.2.1").await;
            assert_eq!(roundtrip(&mut c, GET).await.unwrap().status, 200);
            open.push(c);
        }
        let mut fourth = from(api, "192.0.2.1").await;
        let _ = fourth.write_all(GET).await;
        assert!(
            closed(&mut fourth).await,
            "the fourth from one source is closed"
        );
        // Another source, and the exempt one, are not affected.
        let mut other = from(api, "192.0.2.2").await;
        assert_eq!(roundtrip(&mut other, GET).await.unwrap().status, 200);
        let mut trusted = Vec::new();
        for _ in 0..10 {
            let mut c = from(api, "10.1.2.3").await;
            assert_eq!(roundtrip(&mut c, GET).await.unwrap().status, 200);
            trusted.push(c);
        }
        // A connection closes: the source may open one again.
        drop(open.pop());
        let fe = || d.stats().frontend("api").unwrap().clone();
        eventually(5, "the closed connection is no longer counted", || {
            fe().conn_cur == 13
        })
        .await;
        let mut again = from(api, "192.0.2.1").await;
        assert_eq!(roundtrip(&mut again, GET).await.unwrap().status, 200);
        assert_eq!(fe().limit_conns, 1);
    })
    .await;
}

#[tokio::test]
async fn request_rate_per_source_answers_429_with_retry_after() {
    bounded(20, async {
        let (d, o) = edge().await;
        let api = d.addr("api").unwrap();
        let mut c = from(api, "192.0.2.9").await;
        for i in 0..5 {
            assert_eq!(
                roundtrip(&mut c, GET).await.unwrap().status,
                200,
                "request {i}"
            );
        }
        let r = roundtrip(&mut c, GET).await.unwrap();
        assert_eq!(r.status, 429);
        assert_eq!(r.header("retry-after").as_deref(), Some("1"));
        // The connection stays usable; the exempt source is never limited.
        let mut t = from(api, "10.9.9.9").await;
        for _ in 0..20 {
            assert_eq!(roundtrip(&mut t, GET).await.unwrap().status, 200);
        }
        // Tokens come back: 5/s is one every 200 ms.
        tokio::time::sleep(Duration::from_millis(1100)).await;
        for _ in 0..5 {
            assert_eq!(roundtrip(&mut c, GET).await.unwrap().status, 200);
        }
        assert_eq!(roundtrip(&mut c, GET).await.unwrap().status, 429);
        let fe = d.stats().frontend("api").unwrap().clone();
        assert_eq!(fe.limit_req_rate, 2);
        assert_eq!(
            o.count(),
            5 + 20 + 5,
            "no limited request reached the origin"
        );
    })
    .await;
}

#[tokio::test]
async fn tcp_connection_rate_per_source() {
    bounded(20, async {
        let (d, _o) = edge().await;
        let db = d.addr("db").unwrap();
        let echo = |mut c: TcpStream| async move {
            c.write_all(b"ping").await.unwrap();
            let mut b = [0u8; 4];
            c.read_exact(&mut b).await.map(|_| b).ok()
        };
        for _ in 0..3 {
            assert_eq!(echo(from(db, "198.51.100.7").await).await, Some(*b"ping"));
        }
        let mut fourth = from(db, "198.51.100.7").await;
        assert!(closed(&mut fourth).await);
        assert_eq!(echo(from(db, "198.51.100.8").await).await, Some(*b"ping"));
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(
            echo(from(db, "198.51.100.7").await).await,
            Some(*b"ping"),
            "a token came back (3/s: one every 333 ms)"
        );
        assert_eq!(d.stats().frontend("db").unwrap().limit_conn_rate, 1);
    })
    .await;
}
