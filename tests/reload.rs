//! Reload in the running process through real sockets: 20 reloads under a
//! stream of keep-alive and new-connection requests drop nothing and each
//! one's routing is visible at once; a WebSocket and a TCP stream stay open
//! across reloads; a broken file changes nothing; listeners added and
//! removed in one reload.

use fulcrum_testkit as support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::Duration;

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The config of step `i`: weights change, server b comes and goes, c is
/// added on odd steps, and /v2/ goes to backend v2 on even steps only.
/// Generation `i` of a config that changes at each reload: server weights,
/// which servers exist, and whether a rule routes /v2/ elsewhere.
fn http_conf(i: usize, o: &[Origin]) -> String {
    let weight = i64::try_from(1 + i % 3).unwrap();
    let mut app = Backend::new("app").set("balance", "wrr").server_with(
        "a",
        o[0].addr,
        table([("weight", weight)]),
    );
    if i % 3 != 2 {
        app = app.server("b", o[1].addr);
    }
    if i % 2 == 1 {
        app = app.server("c", o[2].addr);
    }
    let rules = if i.is_multiple_of(2) {
        value(r#"[{ use_backend = "v2", if = "v2" }]"#)
    } else {
        value("[]")
    };
    Conf::new()
        .global("threads", 2)
        .frontend(
            Frontend::web()
                .set("acl", value(r#"{ v2 = { path_prefix = "/v2/" } }"#))
                .set("rules", rules),
        )
        .backend(app)
        .backend(Backend::new("v2").server("v", o[3].addr))
        .text()
}

/// A client loop until `stop`: (requests, failures).
async fn hammer(addr: SocketAddr, keepalive: bool, stop: Arc<AtomicBool>) -> (u64, u64) {
    let (mut ok, mut failed) = (0, 0);
    let mut c: Option<TcpStream> = None;
    while !stop.load(Relaxed) {
        if c.is_none() {
            c = Some(TcpStream::connect(addr).await.unwrap());
        }
        let r = roundtrip(c.as_mut().unwrap(), b"GET / HTTP/1.1\r\nHost: h\r\n\r\n").await;
        match r {
            Some(r) if r.status == 200 => ok += 1,
            _ => failed += 1,
        }
        if !keepalive {
            c = None;
        }
    }
    (ok, failed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_reloads_under_load_drop_nothing() {
    bounded(60, async {
        let o = [
            Origin::http("a", "").await,
            Origin::http("b", "").await,
            Origin::http("c", "").await,
            Origin::http("v", "").await,
        ];
        let dir = TempDir::new("reload-load");
        let file = dir.join("fulcrum.toml");
        std::fs::write(&file, http_conf(0, &o)).unwrap();
        let d = start_named(file.to_str().unwrap(), &http_conf(0, &o));
        let web = d.addr("web").unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let clients: Vec<_> = [true, true, false]
            .into_iter()
            .map(|ka| tokio::spawn(hammer(web, ka, stop.clone())))
            .collect();
        // Let the clients and their kept-alive connections get going.
        tokio::time::sleep(Duration::from_millis(100)).await;
        for i in 1..=20 {
            std::fs::write(&file, http_conf(i, &o)).unwrap();
            let r = d.reload().unwrap_or_else(|e| panic!("reload {i}: {e}"));
            assert!(
                r.starts_with(&format!("reloaded: generation {}", i + 1)),
                "{r}"
            );
            // The new routing, on a connection kept alive across the reload too.
            let v2 = get(web, "/v2/x", "").await.header("x-server").unwrap();
            let want_v = i.is_multiple_of(2);
            assert_eq!(v2 == "v", want_v, "reload {i}: /v2/ went to {v2}");
            let names = servers_of(&d, "app");
            assert_eq!(names.contains(&"c".to_string()), i % 2 == 1, "reload {i}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        stop.store(true, Relaxed);
        let (mut ok, mut failed) = (0, 0);
        for c in clients {
            let (o, f) = c.await.unwrap();
            ok += o;
            failed += f;
        }
        assert_eq!(failed, 0, "{ok} requests served");
        assert!(ok > 200, "{ok}");
        let st = d.stats();
        assert_eq!(st.global.generation, 21);
        assert_eq!(st.global.reloads, 20);
        let last = st.global.last_reload.clone().unwrap();
        assert_eq!(last.1, Ok(21));
        // The counters kept counting across every reload (a removed server's
        // leave with it; the frontend's and server a's stay).
        let ok_2xx = st.frontend("web").unwrap().http_responses[1];
        assert!(ok_2xx >= ok + 20, "{ok_2xx} 2xx for {ok} + 20 requests");
        let a = st.backend("app").unwrap().server("a").unwrap().picked;
        assert!(a >= ok / 4, "server a: {a} of {ok}");
    })
    .await;
}

/// A WebSocket origin: 101 to the handshake, then an echo.
async fn websocket_origin() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut got = Vec::new();
                let mut buf = [0u8; 4096];
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = s
                    .write_all(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
                    .await;
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn a_websocket_and_a_tcp_stream_stay_open_across_reloads() {
    bounded(30, async {
        let ws = websocket_origin().await;
        let echo = Origin::start("echo", Behaviour::Echo).await;
        let dir = TempDir::new("reload-streams");
        let file = dir.join("fulcrum.toml");
        let conf = |weight: u32| {
            let w = table([("weight", weight)]);
            Conf::new()
                .frontend(Frontend::http("web").to("ws"))
                .frontend(Frontend::tcp("tcp").to("echo"))
                .backend(Backend::new("ws").server_with("w", ws, w.clone()))
                .backend(Backend::new("echo").server_with("e", echo.addr, w))
                .text()
        };
        std::fs::write(&file, conf(1)).unwrap();
        let d = start_named(file.to_str().unwrap(), &conf(1));
        let mut w = TcpStream::connect(d.addr("web").unwrap()).await.unwrap();
        w.write_all(b"GET /chat HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n").await.unwrap();
        let r = read_response_head(&mut w).await;
        assert!(r.starts_with("HTTP/1.1 101 "), "{r}");
        let mut t = TcpStream::connect(d.addr("tcp").unwrap()).await.unwrap();
        for i in 2..=6u32 {
            std::fs::write(&file, conf(i)).unwrap();
            d.reload().unwrap();
            for s in [&mut w, &mut t] {
                let msg = format!("frame {i}\n");
                s.write_all(msg.as_bytes()).await.unwrap();
                let mut back = vec![0u8; msg.len()];
                s.read_exact(&mut back).await.unwrap();
                assert_eq!(back, msg.as_bytes());
            }
        }
        assert_eq!(d.stats().global.generation, 6);
        assert_eq!(d.stats().backend("echo").unwrap().server("e").unwrap().weight, 6);
    })
    .await;
}

/// The response head, read byte by byte (nothing past it is consumed).
async fn read_response_head(s: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut b).await.unwrap(), 1);
        head.push(b[0]);
    }
    String::from_utf8(head).unwrap()
}

#[tokio::test]
async fn a_broken_file_changes_nothing_and_says_why() {
    bounded(30, async {
        let a = Origin::http("a", "").await;
        let dir = TempDir::new("reload-broken");
        let file = dir.join("fulcrum.toml");
        let good = format!(
            "[[frontend]]\nname = \"web\"\nlisten = [\"127.0.0.1:0\"]\nmode = \"http\"\ndefault_backend = \"app\"\n\n[[backend]]\nname = \"app\"\nservers = [{{ name = \"a\", address = \"{}\" }}]\n",
            a.addr
        );
        std::fs::write(&file, &good).unwrap();
        let d = start_named(file.to_str().unwrap(), &good);
        std::fs::write(&file, good.replace("default_backend = \"app\"", "default_backend = \"nope\"")).unwrap();
        let e = d.reload().unwrap_err();
        assert!(e.starts_with("reload refused, the running configuration stays:"), "{e}");
        assert!(e.contains("fulcrum.toml:5:"), "file and line: {e}");
        assert!(e.contains("nope"), "{e}");
        let g = d.stats().global;
        assert_eq!((g.generation, g.reloads, g.reloads_failed), (1, 0, 1));
        assert!(matches!(&g.last_reload, Some((_, Err(_)))));
        assert_eq!(get(d.addr("web").unwrap(), "/", "").await.status, 200);
        // A setting only a restart changes: named, the rest applied.
        std::fs::write(&file, format!("[global]\nthreads = 7\n\n{}", good.replace("address =", "weight = 3, address ="))).unwrap();
        let r = d.reload().unwrap();
        assert!(r.contains("global.threads changed: it needs a restart; the running value stays"), "{r}");
        let st = d.stats();
        assert_eq!(st.backend("app").unwrap().server("a").unwrap().weight, 3);
        assert_ne!(d.shared().snapshot().config.global.threads, 7);
    })
    .await;
}

#[tokio::test]
async fn listeners_are_added_and_removed_in_one_reload() {
    bounded(30, async {
        let echo = Origin::start("echo", Behaviour::Echo).await;
        let dir = TempDir::new("reload-listeners");
        let file = dir.join("fulcrum.toml");
        let conf = |names: [&str; 2]| {
            Conf::new()
                .frontend(Frontend::tcp(names[0]).to("be"))
                .frontend(Frontend::tcp(names[1]).to("be"))
                .backend(Backend::new("be").server("e", echo.addr))
                .text()
        };
        let v1 = conf(["one", "keep"]);
        std::fs::write(&file, &v1).unwrap();
        let d = start_named(file.to_str().unwrap(), &v1);
        let one = d.addr("one").unwrap();
        let keep = d.addr("keep").unwrap();
        // A stream open on the listener about to go.
        let mut open = TcpStream::connect(one).await.unwrap();
        open.write_all(b"x").await.unwrap();
        let mut b = [0u8; 1];
        open.read_exact(&mut b).await.unwrap();

        let v2 = conf(["keep", "two"]);
        std::fs::write(&file, &v2).unwrap();
        let r = d.reload().unwrap();
        assert!(r.contains("frontend two: listening on 127.0.0.1:"), "{r}");
        assert!(
            r.contains(&format!("frontend one: no longer listening on {one}")),
            "{r}"
        );
        let two = d.addr("two").unwrap();
        assert_eq!(exchange(two, b"hi").await, b"hi");
        assert_eq!(
            d.addr("keep").unwrap(),
            keep,
            "an unchanged listener keeps its socket"
        );
        assert_eq!(exchange(keep, b"ok").await, b"ok");
        eventually(5, "one refuses", || {
            std::net::TcpStream::connect(one).is_err()
        })
        .await;
        // The stream that was open still flows.
        open.write_all(b"y").await.unwrap();
        open.read_exact(&mut b).await.unwrap();
        assert_eq!(&b, b"y");
        assert!(d.addr("one").is_none());
    })
    .await;
}

#[tokio::test]
async fn a_reload_that_cannot_bind_changes_nothing() {
    bounded(30, async {
        let echo = Origin::start("echo", Behaviour::Echo).await;
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let dir = TempDir::new("reload-bind");
        let file = dir.join("fulcrum.toml");
        let conf = Conf::new()
            .frontend(Frontend::tcp("a").to("be"))
            .backend(Backend::new("be").server("e", echo.addr));
        let v1 = conf.text();
        std::fs::write(&file, &v1).unwrap();
        let d = start_named(file.to_str().unwrap(), &v1);
        let v2 = conf
            .frontend(
                Frontend::tcp("b")
                    .to("be")
                    .set("listen", vec![taken.local_addr().unwrap().to_string()]),
            )
            .text();
        std::fs::write(&file, v2).unwrap();
        let e = d.reload().unwrap_err();
        assert!(e.contains("already in use by another process"), "{e}");
        assert_eq!(d.stats().global.generation, 1);
        assert!(d.addr("b").is_none());
        assert_eq!(exchange(d.addr("a").unwrap(), b"z").await, b"z");
        // The file fixed, the same reload goes through.
        drop(taken);
        std::fs::write(&file, &v1).unwrap();
        assert!(d.reload().unwrap().starts_with("reloaded: generation 2"));
    })
    .await;
}

#[tokio::test]
async fn a_removed_server_drains_then_leaves_and_is_cut_at_its_drain_timeout() {
    bounded(30, async {
        let echo = Origin::start("echo", Behaviour::Echo).await;
        let other = Origin::start("other", Behaviour::Echo).await;
        let dir = TempDir::new("reload-drain");
        let file = dir.join("fulcrum.toml");
        // One server: `old` (echo) or `new` (other).
        let conf = |(name, addr): (&str, std::net::SocketAddr)| {
            Conf::new()
                .frontend(Frontend::tcp("tcp").to("be"))
                .backend(
                    Backend::new("be")
                        .set("drain_timeout", "2s")
                        .server(name, addr),
                )
                .text()
        };
        let old = ("old", echo.addr);
        let new = ("new", other.addr);
        std::fs::write(&file, conf(old)).unwrap();
        let d = start_named(file.to_str().unwrap(), &conf(old));
        let tcp = d.addr("tcp").unwrap();
        let open = |tag: &'static [u8]| async move {
            let mut s = TcpStream::connect(tcp).await.unwrap();
            s.write_all(tag).await.unwrap();
            let mut b = vec![0u8; tag.len()];
            s.read_exact(&mut b).await.unwrap();
            s
        };
        let (mut first, second) = (open(b"1").await, open(b"2").await);
        std::fs::write(&file, conf(new)).unwrap();
        d.reload().unwrap();
        // Removed, still carrying two connections: in the stats as draining.
        let st = d.stats();
        let s = st
            .backend("be")
            .unwrap()
            .server("old")
            .expect("still listed");
        assert!(s.removed && s.status == "drain" && s.conn_cur == 2, "{s:?}");
        assert_eq!(s.reason(), "removed by a reload: draining its connections");
        assert!(st.backend("be").unwrap().server("new").is_some());
        // Its connections still flow; new ones go to the new server.
        first.write_all(b"x").await.unwrap();
        let mut b = [0u8; 1];
        first.read_exact(&mut b).await.unwrap();
        drop(second);
        // At drain_timeout the one left is closed, counted, and the server leaves.
        let mut rest = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), first.read_to_end(&mut rest))
            .await
            .expect("closed by the daemon");
        eventually(5, "old leaves the stats", || {
            d.stats().backend("be").unwrap().server("old").is_none()
        })
        .await;
        assert_eq!(d.stats().global.drain_cut, 1);

        // A removed server whose connections end leaves at once (next tick),
        // with nothing cut.
        let mut third = open(b"3").await;
        std::fs::write(&file, conf(old)).unwrap();
        d.reload().unwrap();
        assert!(
            d.stats()
                .backend("be")
                .unwrap()
                .server("new")
                .unwrap()
                .removed
        );
        third.shutdown().await.unwrap();
        drop(third);
        eventually(5, "new leaves the stats", || {
            d.stats().backend("be").unwrap().server("new").is_none()
        })
        .await;
        assert_eq!(d.stats().global.drain_cut, 1);
    })
    .await;
}
