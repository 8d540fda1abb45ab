//! Every example under config/ is loaded and driven through real sockets, with its
//! listen addresses moved to port 0 and its servers pointed at in-test origins.

use fulcrum_testkit as support;

use support::*;

/// The example's text with listeners on port 0 and servers at `origins`, in order.
#[tokio::test]
async fn tcp_example_balances_and_falls_back_to_the_backup() {
    bounded(10, async {
        let (a, b, c) = (
            Origin::start("pg1", Behaviour::Echo).await,
            Origin::start("pg2", Behaviour::Echo).await,
            Origin::start("pg3", Behaviour::Echo).await,
        );
        let d = start(
            &localize_addrs("config/examples/tcp.toml", &[a.addr, b.addr, c.addr]),
            &[],
        );
        let addrs = d.addrs("db").to_vec();
        assert_eq!(addrs.len(), 2);
        for i in 0..8u8 {
            assert_eq!(exchange(addrs[usize::from(i % 2)], &[i]).await, [i]);
        }
        assert_eq!(
            (a.conns(), b.conns(), c.conns()),
            (4, 4, 0),
            "rr over primaries, backup idle"
        );

        // With both primaries down (as a health check would mark them), the backup serves.
        for s in ["pg1", "pg2"] {
            set_health(&d, "postgres", s, false);
        }
        for i in 0..3u8 {
            assert_eq!(exchange(addrs[0], &[i]).await, [i]);
        }
        assert_eq!(c.conns(), 3);
        let st = d.stats();
        assert_eq!(
            st.backend("postgres")
                .unwrap()
                .server("pg3")
                .unwrap()
                .conn_total,
            3
        );
    })
    .await;
}

#[tokio::test]
async fn proxy_protocol_example_passes_the_client_through() {
    bounded(10, async {
        let (a, b) = (
            Origin::start("a", Behaviour::Record).await,
            Origin::start("b", Behaviour::Record).await,
        );
        let d = start(
            &localize_addrs("config/examples/proxy-protocol.toml", &[a.addr, b.addr]),
            &[],
        );
        let fe = d.addr("edge").unwrap();
        exchange(fe, b"PROXY TCP4 198.51.100.9 192.0.2.1 40000 443\r\none").await;
        exchange(fe, b"PROXY TCP4 198.51.100.9 192.0.2.1 40001 443\r\ntwo").await;
        eventually(5, "both origins saw a stream", || {
            a.conns() == 1
                && b.conns() == 1
                && a.received(0).ends_with(b"one")
                && b.received(0).ends_with(b"two")
        })
        .await;
        // a wants v2 (binary), b wants v1 (text).
        assert!(a.received(0).starts_with(b"\r\n\r\n\0\r\nQUIT\n\x21\x11"));
        assert_eq!(
            b.received(0),
            b"PROXY TCP4 198.51.100.9 192.0.2.1 40001 443\r\ntwo"
        );
    })
    .await;
}

#[tokio::test]
async fn balancing_example_runs_every_backend() {
    bounded(10, async {
        let mut origins = Vec::new();
        for name in ["wa", "wb", "wc", "sa", "sb", "sc", "la", "lb", "pa", "pb"] {
            origins.push(Origin::start(name, Behaviour::Hello).await);
        }
        let addrs: Vec<_> = origins.iter().map(|o| o.addr).collect();
        let d = start(
            &localize_addrs("config/examples/balancing.toml", &addrs),
            &[],
        );
        let mut seq = String::new();
        for _ in 0..7 {
            seq += &hello(d.addr("smooth").unwrap(), b"").await[1..];
        }
        assert_eq!(seq, "aabacaa");
        let hdr = b"PROXY TCP4 203.0.113.9 192.0.2.1 1 2\r\n";
        let first = hello(d.addr("sticky").unwrap(), hdr).await;
        assert!(first.starts_with('s'));
        // Bounded loads count open connections: let the first one finish.
        eventually(5, "first connection closed", || {
            d.stats()
                .backend("by_client")
                .unwrap()
                .servers
                .iter()
                .all(|s| s.conn_cur == 0)
        })
        .await;
        assert_eq!(
            hello(
                d.addr("sticky").unwrap(),
                b"PROXY TCP4 203.0.113.77 192.0.2.1 1 2\r\n"
            )
            .await,
            first
        );
        assert!(hello(d.addr("caches").unwrap(), b"").await.starts_with('l'));
        assert!(hello(d.addr("fast").unwrap(), b"").await.starts_with('p'));
    })
    .await;
}

#[tokio::test]
async fn http_example_hashes_paths_to_servers() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    bounded(10, async {
        let mut origins = Vec::new();
        let mut stand_ins = Vec::new();
        for name in ["c1", "c2", "c3"] {
            let o = fulcrum::origin::spawn(
                "127.0.0.1:0".parse().unwrap(),
                fulcrum::origin::OriginOpts::http(name),
            )
            .await
            .unwrap();
            stand_ins.push(o.addr);
            origins.push(o);
        }
        let d = start_named(
            concat!(env!("CARGO_MANIFEST_DIR"), "/config/examples/http.toml"),
            &localize_addrs("config/examples/http.toml", &stand_ins),
        );
        let get = |path: &'static str| {
            let addr = d.addr("www").unwrap();
            async move {
                let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
                c.write_all(
                    format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                        .as_bytes(),
                )
                .await
                .unwrap();
                let mut out = String::new();
                c.read_to_string(&mut out).await.unwrap();
                out.split("\r\n\r\n")
                    .nth(1)
                    .unwrap()
                    .split(' ')
                    .next()
                    .unwrap()
                    .to_string()
            }
        };
        let first = get("/img/cats/1.png").await;
        for p in ["/img/cats/2.png", "/img/cats/3.png?v=2", "/img/cats/"] {
            assert_eq!(get(p).await, first, "{p}");
        }
        let mut seen = std::collections::HashSet::new();
        for p in [
            "/a/1", "/b/1", "/c/1", "/d/1", "/e/1", "/f/1", "/g/1", "/h/1", "/i/1", "/j/1",
        ] {
            seen.insert(get(p).await);
        }
        assert!(seen.len() >= 2, "{seen:?}");

        // The error file replaces fulcrum's own 503 body once every server is down.
        for s in servers_of(&d, "cache") {
            set_health(&d, "cache", &s, false);
        }
        let mut c = tokio::net::TcpStream::connect(d.addr("www").unwrap())
            .await
            .unwrap();
        c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut out = String::new();
        c.read_to_string(&mut out).await.unwrap();
        assert!(out.starts_with("HTTP/1.1 503 "), "{out}");
        assert!(out.contains("content-type: text/html\r\n"), "{out}");
        assert!(
            out.ends_with(
                &std::fs::read_to_string(concat!(
                    env!("CARGO_MANIFEST_DIR"),
                    "/config/examples/errors/503.html"
                ))
                .unwrap()
            )
        );
    })
    .await;
}
