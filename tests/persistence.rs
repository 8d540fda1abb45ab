//! Persistence through real sockets (`config/examples/persistence.toml`): cookie
//! insert (indirect, nocache), cookie prefix, source stickiness with expiry,
//! fallback when the pinned server is dead or in maintenance, forged cookies.

use fulcrum_testkit as support;

use std::net::SocketAddr;
use std::time::Duration;

use fulcrum::command::AdminState;
use support::*;
use tokio::net::{TcpSocket, TcpStream};

const EXAMPLE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/config/examples/persistence.toml"
);

struct Setup {
    d: fulcrum::daemon::Running,
    a: Origin,
    b: Origin,
    java: [Origin; 2],
    sticky: [Origin; 3],
}

/// The example with its servers at test origins; server "c" of backend "app"
/// at an address where nothing listens; source entries expire after `expire`.
async fn setup(expire: &str) -> Setup {
    let a = Origin::http("a", "").await;
    let b = Origin::http("b", "").await;
    let dead = dead_addr().await;
    let session = "set-cookie: JSESSIONID=abc123; Path=/\r\n";
    let java = [
        Origin::http("j1", session).await,
        Origin::http("j2", session).await,
    ];
    let sticky = [
        Origin::http("s1", "").await,
        Origin::http("s2", "").await,
        Origin::http("s3", "").await,
    ];
    let mut addrs = vec![a.addr, b.addr, dead];
    addrs.extend(java.iter().map(|o| o.addr));
    addrs.extend(sticky.iter().map(|o| o.addr));
    let text = localize_addrs("config/examples/persistence.toml", &addrs);
    let text = text.replace("expire = \"30m\"", &format!("expire = \"{expire}\""));
    assert!(text.contains(expire), "{text}");
    Setup {
        d: start_named(EXAMPLE, &text),
        a,
        b,
        java,
        sticky,
    }
}

#[tokio::test]
async fn cookie_insert_pins_a_user_and_falls_back() {
    bounded(20, async {
        let s = setup("30m").await;
        let addr = s.d.addr("insert").unwrap();

        // First visit: balanced, and the response names the server.
        let r = get(addr, "/", "").await;
        let first = r.text().trim().to_string();
        let cookie = format!("SRV=s-{first}");
        assert_eq!(
            r.header("set-cookie"),
            Some(format!("{cookie}; Path=/; HttpOnly; SameSite=Lax")),
            "{}",
            r.head
        );
        assert_eq!(r.header("cache-control").as_deref(), Some("private"));

        // Later visits stay there (rr alone would rotate), without a new cookie;
        // indirect: the server never sees SRV, but sees the other cookies.
        let mut c = TcpStream::connect(addr).await.unwrap();
        for _ in 0..6 {
            let raw = format!("GET / HTTP/1.1\r\nHost: x\r\nCookie: theme=dark; {cookie}\r\n\r\n");
            let r = roundtrip(&mut c, raw.as_bytes()).await.unwrap();
            assert_eq!(r.text().trim(), first);
            assert!(r.header("set-cookie").is_none(), "{}", r.head);
        }
        let origin = if first == "a" { &s.a } else { &s.b };
        let seen = origin.last();
        assert!(
            seen.contains("cookie: theme=dark\r\n") || seen.ends_with("cookie: theme=dark"),
            "{seen}"
        );
        assert!(!seen.contains("SRV"), "{seen}");
        let st = s.d.stats();
        assert_eq!(st.backend("app").unwrap().persist_hits, 6);

        // A forged cookie naming no server: balanced, and given a real cookie.
        let r = get(addr, "/", "Cookie: SRV=s-nope\r\n").await;
        assert_eq!(r.status, 200);
        let fixed = r.header("set-cookie").unwrap();
        assert!(
            fixed == "SRV=s-a; Path=/; HttpOnly; SameSite=Lax"
                || fixed == "SRV=s-b; Path=/; HttpOnly; SameSite=Lax",
            "{fixed}"
        );
        assert_eq!(s.d.stats().backend("app").unwrap().persist_misses, 1);

        // The pinned server is dead (nothing listens): the request goes to a live
        // one and the cookie is moved there.
        for _ in 0..3 {
            let r = get(addr, "/", "Cookie: SRV=s-c\r\n").await;
            assert_eq!(r.status, 200);
            let now = r.text().trim().to_string();
            assert_eq!(
                r.header("set-cookie"),
                Some(format!("SRV=s-{now}; Path=/; HttpOnly; SameSite=Lax"))
            );
        }
        assert!(s.d.stats().backend("app").unwrap().connect_errors >= 1);

        // Maintenance: the cookie is not honoured; drain: it still is, while new
        // users are no longer sent there.
        set_state(&s.d, "app", "a", AdminState::Maint);
        let r = get(addr, "/", "Cookie: SRV=s-a\r\n").await;
        assert_eq!(r.text(), "b\n");
        assert_eq!(
            r.header("set-cookie").as_deref(),
            Some("SRV=s-b; Path=/; HttpOnly; SameSite=Lax")
        );
        set_state(&s.d, "app", "a", AdminState::Drain);
        assert_eq!(get(addr, "/", "Cookie: SRV=s-a\r\n").await.text(), "a\n");
        for _ in 0..4 {
            assert_eq!(get(addr, "/", "").await.text(), "b\n");
        }
    })
    .await;
}

#[tokio::test]
async fn cookie_prefix_rides_on_the_application_cookie() {
    bounded(20, async {
        let s = setup("30m").await;
        let addr = s.d.addr("prefix").unwrap();
        let r = get(addr, "/login", "").await;
        let first = r.text().trim().to_string();
        assert_eq!(
            r.header("set-cookie"),
            Some(format!("JSESSIONID={first}~abc123; Path=/"))
        );
        let other = if first == "j1" { "j2" } else { "j1" };
        for _ in 0..4 {
            let r = get(
                addr,
                "/cart",
                &format!("Cookie: JSESSIONID={other}~abc123; x=1\r\n"),
            )
            .await;
            assert_eq!(r.text().trim(), other);
        }
        let o = if other == "j1" {
            &s.java[0]
        } else {
            &s.java[1]
        };
        assert!(
            o.last().contains("cookie: JSESSIONID=abc123; x=1"),
            "{}",
            o.last()
        );
    })
    .await;
}

async fn connect_from(src: &str, addr: SocketAddr) -> TcpStream {
    let sock = TcpSocket::new_v4().unwrap();
    sock.bind(format!("{src}:0").parse().unwrap()).unwrap();
    sock.connect(addr).await.unwrap()
}

async fn from(src: &str, addr: SocketAddr) -> String {
    let mut c = connect_from(src, addr).await;
    let r = roundtrip(&mut c, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    r.text().trim().to_string()
}

#[tokio::test]
async fn source_persistence_sticks_then_expires_and_survives_a_reload() {
    bounded(20, async {
        let s = setup("400ms").await;
        let addr = s.d.addr("source").unwrap();
        // rr over s1, s2, s3: three addresses, three servers, each kept.
        let one = from("127.0.0.1", addr).await;
        let two = from("127.0.0.2", addr).await;
        let three = from("127.0.0.3", addr).await;
        let set: std::collections::BTreeSet<_> = [&one, &two, &three].into_iter().collect();
        assert_eq!(set.len(), 3);
        for _ in 0..3 {
            assert_eq!(from("127.0.0.1", addr).await, one);
            assert_eq!(from("127.0.0.2", addr).await, two);
        }
        assert_eq!(s.d.stats().backend("sticky").unwrap().persist_hits, 6);

        // A new snapshot (same servers plus one, added by command) keeps the table.
        s.d.command(fulcrum::command::Command::AddServer(
            fulcrum::command::NewServer {
                backend: "sticky".into(),
                server: "s4".into(),
                addr: s.sticky[2].addr,
                weight: 1,
                backup: false,
                check: false,
            },
        ))
        .unwrap();
        assert_eq!(servers_of(&s.d, "sticky").len(), 4);
        assert_eq!(from("127.0.0.1", addr).await, one);

        // After `expire` idle, an address is balanced again: rr has moved on.
        let four = from("127.0.0.4", addr).await;
        tokio::time::sleep(Duration::from_millis(600)).await;
        let again = from("127.0.0.1", addr).await;
        assert_ne!(again, four, "re-balanced after expiry");
        assert_eq!(from("127.0.0.1", addr).await, again);
        let total: usize = s.sticky.iter().map(Origin::count).sum();
        assert_eq!(total, 13);
    })
    .await;
}

#[tokio::test]
async fn source_persistence_in_tcp_mode() {
    bounded(20, async {
        let o = [
            Origin::start("t1", Behaviour::Hello).await,
            Origin::start("t2", Behaviour::Hello).await,
            Origin::start("t3", Behaviour::Hello).await,
        ];
        let d = Conf::new()
            .frontend(Frontend::tcp("f").to("b").set("accept_proxy", true))
            .backend(
                Backend::new("b")
                    .set("balance", "rr")
                    .set("persist", value("{ source = true }"))
                    .server("t1", o[0].addr)
                    .server("t2", o[1].addr)
                    .server("t3", o[2].addr),
            )
            .start();
        let addr = d.addr("f").unwrap();
        let proxy = |ip: &str| format!("PROXY TCP4 {ip} 192.0.2.1 4000 80\r\n").into_bytes();
        let first = hello(addr, &proxy("10.9.0.1")).await;
        for _ in 0..3 {
            assert_eq!(hello(addr, &proxy("10.9.0.1")).await, first);
        }
        let other = hello(addr, &proxy("10.9.0.2")).await;
        assert_ne!(other, first, "rr moved on for a new address");
        assert_eq!(hello(addr, &proxy("10.9.0.2")).await, other);
        let b = d.stats().backend("b").unwrap().clone();
        assert_eq!((b.persist_hits, b.persist_misses), (4, 0));
    })
    .await;
}

/// Prefix mode keeps a quoted value quoted both ways, and an inserted cookie
/// carries the configured attributes.
#[tokio::test]
async fn quoted_prefix_values_and_inserted_cookie_attributes() {
    bounded(20, async {
        let quoted = "set-cookie: JSESSIONID=\"abc\"; Path=/\r\n";
        let j1 = Origin::http("j1", quoted).await;
        let j2 = Origin::http("j2", quoted).await;
        let a = Origin::http("a", "").await;
        let d = Conf::new()
            .frontend(Frontend::http("java").to("java"))
            .frontend(Frontend::http("app").to("app"))
            .backend(
                Backend::new("java")
                    .set("persist", value(r#"{ cookie = "JSESSIONID", mode = "prefix" }"#))
                    .server("j1", j1.addr)
                    .server("j2", j2.addr),
            )
            .backend(
                Backend::app(a.addr).set(
                    "persist",
                    value(
                        r#"{ cookie = "SRV", secure = true, httponly = true, samesite = "lax", domain = "example.com", max_age = "1h" }"#,
                    ),
                ),
            )
            .start();
        let java = d.addr("java").unwrap();
        let r = get(java, "/", "").await;
        let first = r.text().trim().to_string();
        assert_eq!(
            r.header("set-cookie"),
            Some(format!("JSESSIONID=\"{first}~abc\"; Path=/"))
        );
        let r = get(java, "/", &format!("Cookie: JSESSIONID=\"{first}~abc\"\r\n")).await;
        assert_eq!(r.text().trim(), first);
        let origin = if first == "j1" { &j1 } else { &j2 };
        assert!(
            origin.last().contains("\r\ncookie: JSESSIONID=\"abc\""),
            "{}",
            origin.last()
        );

        let r = get(d.addr("app").unwrap(), "/", "").await;
        assert_eq!(
            r.header("set-cookie").as_deref(),
            Some("SRV=a; Path=/; Domain=example.com; Max-Age=3600; Secure; HttpOnly; SameSite=Lax")
        );
    })
    .await;
}
