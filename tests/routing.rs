//! Layer-7 routing through real sockets: ACL matchers, conditions, rule order,
//! deny, redirect, header rewrites, weighted splits and A/B by cookie or header.
//! Persistence is in `tests/persistence.rs`.

use fulcrum_testkit as support;

use std::collections::BTreeSet;

use support::*;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

fn hits(head: &str, field: &str) -> BTreeSet<String> {
    head.lines()
        .filter_map(|l| l.split_once(':'))
        .filter(|(n, _)| n.eq_ignore_ascii_case(field))
        .map(|(_, v)| v.trim().to_string())
        .collect()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

/// Every ACL kind is mapped to a header rule `x-hit: NAME`, so what the origin
/// sees tells which ACLs matched. PROXY headers set the source and destination.
#[tokio::test]
async fn every_matcher_positive_and_negative() {
    bounded(20, async {
        let origin = Origin::http("o", "").await;
        let acls = [
            ("p_exact", r#"{ path = "/shop/cart.json" }"#),
            ("p_prefix", r#"{ path_prefix = ["/nope/", "/shop/"] }"#),
            ("p_suffix", r#"{ path_suffix = ".json" }"#),
            ("p_regex", r#"{ path_regex = '^/shop/[a-z]+\.json$' }"#),
            ("h_exact", r#"{ host = "shop.example" }"#),
            ("h_suffix", r#"{ host_suffix = "example" }"#),
            ("h_regex", r#"{ host_regex = '^shop\.' }"#),
            ("m", r#"{ method = ["GET", "HEAD"] }"#),
            ("hdr_present", r#"{ header = "X-Beta" }"#),
            ("hdr_eq", r#"{ header = "x-beta", equals = "yes-please" }"#),
            ("hdr_prefix", r#"{ header = "X-Beta", prefix = "yes" }"#),
            ("hdr_regex", r#"{ header = "X-Beta", regex = "please$" }"#),
            ("q_present", r#"{ query = "debug" }"#),
            ("q_eq", r#"{ query = "user", equals = ["bob", "carol"] }"#),
            ("c_present", r#"{ cookie = "group" }"#),
            ("c_eq", r#"{ cookie = "group", equals = "beta" }"#),
            ("src4", r#"{ src = ["10.0.0.0/8", "172.16.0.0/12"] }"#),
            ("src6", r#"{ src = "2001:db8::/32" }"#),
            ("dport", r#"{ dst_port = [443, 8443] }"#),
        ];
        let acl = table(acls.map(|(n, m)| (n, value(m))));
        let rules: Vec<toml::Value> = acls
            .iter()
            .map(|(n, _)| value(&format!(r#"{{ add_header = "x-hit: {n}", if = "{n}" }}"#)))
            .collect();
        let d = Conf::new()
            .frontend(
                Frontend::http("f")
                    .to("b")
                    .set("accept_proxy", true)
                    .set("x_forwarded", false)
                    .set("acl", acl)
                    .set("rules", rules),
            )
            .backend(Backend::new("b").server("o", origin.addr))
            .start();
        let addr = d.addr("f").unwrap();
        let send = |raw: String| async move {
            let mut c = TcpStream::connect(addr).await.unwrap();
            let r = roundtrip(&mut c, raw.as_bytes()).await.expect("a response");
            assert_eq!(r.status, 200, "{}", r.head);
        };

        send("PROXY TCP4 10.1.2.3 192.0.2.1 5555 8443\r\nGET /shop/cart.json?debug&user=bob HTTP/1.1\r\nHost: Shop.Example:8443\r\nX-Beta: yes-please\r\nCookie: a=1; group=beta\r\n\r\n".into()).await;
        let all: Vec<&str> = acls.iter().map(|(n, _)| *n).filter(|n| *n != "src6").collect();
        assert_eq!(hits(&origin.last(), "x-hit"), set(&all));

        send("PROXY TCP4 192.168.1.1 192.0.2.1 5555 80\r\nPOST /other/shop/cart.jsonx?user=alice&debugx=1 HTTP/1.1\r\nHost: myshop.example.org\r\nX-Alpha: yes-please\r\nX-Beta-2: yes\r\nCookie: groups=beta; group2=beta\r\nContent-Length: 0\r\n\r\n".into()).await;
        assert_eq!(hits(&origin.last(), "x-hit"), set(&[]));

        // Near misses: same header with another value, the cookie with another value.
        send("PROXY TCP6 2001:db8::7 2001:db8::1 5555 80\r\nHEAD /shop/Cart.json HTTP/1.1\r\nHost: www.example\r\nConnection: close\r\nX-Beta: no-please\r\nCookie: group=alpha\r\n\r\n".into()).await;
        assert_eq!(
            hits(&origin.last(), "x-hit"),
            set(&["p_prefix", "p_suffix", "h_suffix", "m", "hdr_present", "hdr_regex", "c_present", "src6"])
        );
    })
    .await;
}

#[tokio::test]
async fn conditions_combine_and_the_first_routing_rule_wins() {
    bounded(20, async {
        let one = Origin::http("one", "").await;
        let two = Origin::http("two", "").await;
        let d = Conf::new()
            .frontend(
                Frontend::http("f")
                    .to("one")
                    .set(
                        "acl",
                        value(r#"{ a = { path_prefix = "/a" }, b = { header = "x-b" } }"#),
                    )
                    .set(
                        "rules",
                        value(
                            r#"[
  { add_header = "x-cond: and", if = "a b" },
  { add_header = "x-cond: or", if = "a || b" },
  { add_header = "x-cond: not", if = "!a" },
  { add_header = "x-cond: unless", unless = "a b" },
  { add_header = "x-cond: mixed", if = "!a b or a !b" },
  { use_backend = "two", if = "b" },
  { use_backend = "one", if = "b" },
  { add_header = "x-cond: after-route", if = "b" },
]"#,
                        ),
                    ),
            )
            .backend(Backend::new("one").server("o1", one.addr))
            .backend(Backend::new("two").server("o2", two.addr))
            .start();
        let addr = d.addr("f").unwrap();
        let cases: [(&str, &str, &[&str], &str); 4] = [
            ("/a", "x-b: 1\r\n", &["and", "or", "after-route"], "two"),
            ("/a", "", &["or", "unless", "mixed"], "one"),
            (
                "/x",
                "x-b: 1\r\n",
                &["or", "not", "unless", "mixed", "after-route"],
                "two",
            ),
            ("/x", "", &["not", "unless"], "one"),
        ];
        for (path, extra, want, server) in cases {
            let r = get(addr, path, extra).await;
            assert_eq!(r.text(), format!("{server}\n"), "{path} {extra:?}");
            let o = if server == "one" { &one } else { &two };
            assert_eq!(hits(&o.last(), "x-cond"), set(want), "{path} {extra:?}");
        }
    })
    .await;
}

#[tokio::test]
async fn routing_example_routes_denies_redirects_and_rewrites() {
    bounded(20, async {
        let web = Origin::http("web1", "x-powered-by: php\r\n").await;
        let api = Origin::http("api1", "").await;
        let stat = Origin::http("static1", "").await;
        let path = "config/examples/routing.toml";
        let d = start_named(
            concat!(env!("CARGO_MANIFEST_DIR"), "/config/examples/routing.toml"),
            &localize_addrs(path, &[web.addr, api.addr, stat.addr]),
        );
        let addr = d.addr("www").unwrap();

        // Routing by path and by host; the default backend otherwise.
        assert_eq!(get(addr, "/api/v2/users", "").await.text(), "api1\n");
        let mut c = TcpStream::connect(addr).await.unwrap();
        let r = roundtrip(&mut c, b"GET /home HTTP/1.1\r\nHost: EU.Shop.Example:8082\r\n\r\n")
            .await
            .unwrap();
        assert_eq!(r.text(), "api1\n");
        assert_eq!(get(addr, "/logo.svg", "").await.text(), "static1\n");
        let r = get(addr, "/index.html", "X-Internal-Token: s3cret\r\n").await;
        assert_eq!(r.text(), "web1\n");

        // Header rewrites: seen by the origin and by the client.
        let seen = web.last().to_ascii_lowercase();
        assert!(!seen.contains("x-internal-token"), "{seen}");
        assert!(seen.contains("x-client-zone: internal"), "{seen}");
        assert_eq!(r.header("x-served-by").as_deref(), Some("fulcrum"));
        assert!(r.header("x-powered-by").is_none(), "{}", r.head);
        assert_eq!(r.header("x-server").as_deref(), Some("web1"));
        get(addr, "/index.html?debug", "X-Debug: off\r\n").await;
        let seen = web.last().to_ascii_lowercase();
        assert!(seen.contains("x-debug: on") && !seen.contains("x-debug: off"), "{seen}");

        // Deny: status and body; a bodyless request keeps the connection.
        let mut c = TcpStream::connect(addr).await.unwrap();
        let r = roundtrip(&mut c, b"GET /admin/users HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        assert_eq!((r.status, r.text().as_str()), (403, "admins only\n"));
        assert!(r.header("connection").is_none(), "{}", r.head);
        let r = roundtrip(&mut c, b"GET /admin/users HTTP/1.1\r\nHost: x\r\nX-Admin-Key: let-me-in\r\n\r\n")
            .await
            .unwrap();
        assert_eq!((r.status, r.text().as_str()), (200, "web1\n"));
        // A request whose body was not read: answered, then the connection closes,
        // and the body is never taken for a request.
        let mut c = TcpStream::connect(addr).await.unwrap();
        c.write_all(b"PUT /x HTTP/1.1\r\nHost: x\r\nX-Read-Only: 1\r\nContent-Length: 38\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let r = read_response(&mut c).await.unwrap();
        assert_eq!(r.status, 405);
        assert_eq!(r.header("connection").as_deref(), Some("close"));
        assert!(r.text().starts_with("405 Method Not Allowed"), "{}", r.text());
        assert!(read_response(&mut c).await.is_none(), "connection closed");
        assert!(!web.heads().iter().any(|h| h.contains("smuggled")));
        assert_eq!(get(addr, "/api/v1/users", "").await.status, 410);

        // Redirect: status and location built from the request.
        let r = get(addr, "/blog/2026/hello?lang=en", "").await;
        assert_eq!(r.status, 301);
        assert_eq!(
            r.header("location").as_deref(),
            Some("https://blog.example/blog/2026/hello?lang=en")
        );

        let r = get(addr, "/login?next=/cart", "").await;
        assert_eq!(r.status, 308);
        assert_eq!(r.header("location").as_deref(), Some("https://test.example/login"));
        let r = get(addr, "/contact-us?x=1", "").await;
        assert_eq!(r.status, 302);
        assert_eq!(r.header("location").as_deref(), Some("/contact"));
        assert_eq!(r.header("content-length").as_deref(), Some("0"));

        let st = d.stats();
        let f = st.frontend("www").unwrap();
        assert_eq!((f.http_denied, f.http_redirected), (3, 3), "{f:?}");
        assert_eq!(f.http_responses[3], 3, "4xx counted");
        assert_eq!(st.backend("api").unwrap().http_requests, 2);
        assert_eq!(st.backend("static").unwrap().http_requests, 1);
    })
    .await;
}

/// Requests of `path` over `conns` keep-alive connections; returns the count per
/// answering server.
async fn spread(
    addr: std::net::SocketAddr,
    total: usize,
    conns: usize,
    extra: &'static str,
) -> std::collections::BTreeMap<String, usize> {
    let mut tasks = Vec::new();
    for _ in 0..conns {
        tasks.push(tokio::spawn(async move {
            let mut c = TcpStream::connect(addr).await.unwrap();
            let mut seen = std::collections::BTreeMap::new();
            let raw = format!("GET / HTTP/1.1\r\nHost: x\r\n{extra}\r\n");
            for _ in 0..total / conns {
                let r = roundtrip(&mut c, raw.as_bytes()).await.unwrap();
                *seen.entry(r.text()).or_insert(0usize) += 1;
            }
            seen
        }));
    }
    let mut all = std::collections::BTreeMap::new();
    for t in tasks {
        for (k, v) in t.await.unwrap() {
            *all.entry(k.trim().to_string()).or_insert(0) += v;
        }
    }
    all
}

#[tokio::test]
async fn canary_example_splits_70_30_and_pins_testers() {
    bounded(120, async {
        let v1 = Origin::http("v1", "").await;
        let v2 = Origin::http("v2", "").await;
        let d = start_named(
            concat!(env!("CARGO_MANIFEST_DIR"), "/config/examples/canary.toml"),
            &localize_addrs("config/examples/canary.toml", &[v1.addr, v2.addr]),
        );
        let addr = d.addr("shop").unwrap();

        let n = spread(addr, 10_000, 4, "").await;
        let on_v1 = n.get("v1").copied().unwrap_or(0);
        assert_eq!(n.values().sum::<usize>(), 10_000);
        assert!((6_700..=7_300).contains(&on_v1), "70/30 within 3 %: {n:?}");
        let st = d.stats();
        assert_eq!(st.backend("app-v1").unwrap().http_requests as usize, on_v1);

        // A/B: the beta cookie or the tester header always lands on v2.
        let n = spread(addr, 200, 2, "Cookie: uid=1; group=beta\r\n").await;
        assert_eq!(n.get("v2"), Some(&200), "{n:?}");
        let n = spread(addr, 100, 1, "X-Canary: always\r\n").await;
        assert_eq!(n.get("v2"), Some(&100), "{n:?}");

        // Sticky split: one user, one side, every time; users spread 70/30.
        let mut sides = std::collections::BTreeMap::new();
        for user in 0..300 {
            let cookie = format!("Cookie: uid=user-{user}\r\n");
            let first = get(addr, "/checkout/cart", &cookie).await.text();
            for _ in 0..3 {
                assert_eq!(
                    get(addr, "/checkout/pay", &cookie).await.text(),
                    first,
                    "user {user}"
                );
            }
            *sides.entry(first).or_insert(0) += 1;
        }
        let users_v1 = sides.get("v1\n").copied().unwrap_or(0);
        assert!((170..=250).contains(&users_v1), "{sides:?}");
    })
    .await;
}

/// A deny answered to a HEAD on a kept-alive connection carries its length but
/// no body, so the next response on that connection is read as itself.
#[tokio::test]
async fn a_denied_head_request_gets_no_body_and_the_connection_stays_in_step() {
    bounded(10, async {
        let origin = Origin::http("o", "").await;
        let d = Conf::new()
            .frontend(
                Frontend::http("f")
                    .to("b")
                    .set("acl", value(r#"{ secret = { path_prefix = "/secret" } }"#))
                    .set("rules", value(r#"[{ deny = 403, if = "secret" }]"#)),
            )
            .backend(Backend::new("b").server("o", origin.addr))
            .start();
        let mut c = TcpStream::connect(d.addr("f").unwrap()).await.unwrap();
        c.write_all(
            b"HEAD /secret HTTP/1.1\r\nHost: a\r\n\r\nGET /open HTTP/1.1\r\nHost: a\r\n\r\n",
        )
        .await
        .unwrap();
        let denied = read_response_to_head(&mut c).await;
        assert!(denied.starts_with("HTTP/1.1 403 "), "{denied}");
        let next = read_response(&mut c).await.expect("the second response");
        assert_eq!((next.status, next.text().as_str()), (200, "o\n"));
    })
    .await;
}

/// Read one response head (up to the empty line) and nothing more.
async fn read_response_to_head(c: &mut TcpStream) -> String {
    use tokio::io::AsyncReadExt;
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(c.read(&mut b).await.unwrap(), 1, "cut head");
        head.push(b[0]);
    }
    String::from_utf8(head).unwrap()
}
