//! Path normalisation through real sockets (`config/examples/edge.toml`): a path
//! ACL cannot be walked around with encodings, dot segments or slashes; the
//! origin receives the normalised path (or, with `match-only`, the client's);
//! refused paths are 400 with their own class; the balancer and redirects see
//! the normalised path.

use fulcrum_testkit as support;

use support::*;
use tokio::net::TcpStream;

/// What must become of one request target.
#[derive(Debug, Clone, Copy)]
enum Want {
    /// Denied by the `/admin` ACL.
    Denied,
    /// Refused as a path (400, `bad_path`).
    Refused,
    /// Forwarded with exactly this path.
    Forwarded(&'static str),
}

use Want::*;

const CASES: &[(&str, Want)] = &[
    // The walk-arounds of the issue, and their relatives: all denied.
    ("/admin", Denied),
    ("/%61dmin", Denied),
    ("/%61%64%6d%69%6e", Denied),
    ("/adm%69n/users", Denied),
    ("//admin", Denied),
    ("///admin", Denied),
    ("/./admin", Denied),
    ("/x/../admin", Denied),
    ("/x/y/../../admin", Denied),
    ("/../admin", Denied),
    ("/../../admin/", Denied),
    ("/%2e/admin", Denied),
    ("/%2e%2e/admin", Denied),
    ("/x/%2E%2E/admin", Denied),
    ("/x/.%2e/admin", Denied),
    ("/x/%2e./admin", Denied),
    ("/.//admin", Denied),
    ("//./..//admin", Denied),
    ("/admin/../admin", Denied),
    ("/ADMIN", Denied),
    ("/Admin/x", Denied),
    ("/%41dmin", Denied),
    ("/admin?x=1", Denied),
    ("/admin/.", Denied),
    // Refused outright: ambiguous between origins.
    ("/admin%2f", Refused),
    ("/x%2f..%2fadmin", Refused),
    ("/x%2F..%2Fadmin", Refused),
    ("/x\\..\\admin", Refused),
    ("/x%5c..%5cadmin", Refused),
    ("/admin%00", Refused),
    ("/admin%00.png", Refused),
    ("/a%0d%0ax", Refused),
    ("/a%7f", Refused),
    ("/admin%", Refused),
    ("/admin%zz", Refused),
    ("/%%32%65/admin", Refused),
    ("/admin;x=1", Refused),
    ("/x/..;/admin", Refused),
    ("/admin;/", Refused),
    ("/static/..;/admin", Refused),
    // Not the admin area, whatever it looks like: forwarded, normalised.
    ("/administrator/../public", Forwarded("/public")),
    ("/%2561dmin", Forwarded("/%2561dmin")),
    ("/x/%2e%2e%2fadmin", Refused),
    ("/adm%20in", Forwarded("/adm%20in")),
    ("/a/./b/../c", Forwarded("/a/c")),
    ("/a//b///c/", Forwarded("/a/b/c/")),
    ("/%7euser/%7Ea", Forwarded("/~user/~a")),
    ("/q?x=/../admin", Forwarded("/q?x=/../admin")),
    ("/public%3fadmin", Forwarded("/public%3Fadmin")),
    ("/a%c3%a9", Forwarded("/a%C3%A9")),
    ("/", Forwarded("/")),
];

#[tokio::test]
async fn no_encoding_walks_around_a_path_acl() {
    bounded(30, async {
        let origins = [
            Origin::http("a", "").await,
            Origin::http("b", "").await,
            Origin::http("c", "").await,
        ];
        let mut addrs: Vec<_> = origins.iter().map(|o| o.addr).collect();
        addrs.push(dead_addr().await); // the tcp backend's server, unused here
        let d = start(&localize_addrs("config/examples/edge.toml", &addrs), &[]);
        let web = d.addr("www").unwrap();
        assert!(CASES.len() >= 40);
        let (mut denied, mut refused) = (0, 0);
        for (target, want) in CASES {
            let before: usize = origins.iter().map(|o| o.count()).sum();
            let r = get(web, target, "").await;
            let after: Vec<String> = origins.iter().flat_map(|o| o.heads()).collect();
            match want {
                Denied => {
                    assert_eq!(
                        (r.status, r.text().as_str()),
                        (403, "admins only\n"),
                        "{target}"
                    );
                    denied += 1;
                }
                Refused => {
                    assert_eq!(r.status, 400, "{target}");
                    refused += 1;
                }
                Forwarded(path) => {
                    assert_eq!(r.status, 200, "{target}");
                    let line = format!("GET {path} HTTP/1.1");
                    assert_eq!(after.len(), before + 1, "{target}");
                    assert!(
                        after.iter().any(|h| h.starts_with(&line)),
                        "{target}: expected {line} in {after:?}"
                    );
                }
            }
            if !matches!(want, Forwarded(_)) {
                assert_eq!(after.len(), before, "{target} reached an origin");
            }
        }
        // No origin ever saw a path that resolves into the denied prefix.
        for h in origins.iter().flat_map(|o| o.heads()) {
            let target = h.split(' ').nth(1).unwrap().to_ascii_lowercase();
            assert!(!target.starts_with("/admin"), "{h}");
        }
        let st = d.stats();
        let fe = st.frontend("www").unwrap();
        assert_eq!(fe.http_denied, denied);
        assert_eq!(fe.http_rejected, vec![("bad_path", refused)]);
        let last = fe.last_rejected.last().unwrap();
        assert_eq!((last.class, last.status), ("bad_path", 400));
        // The last refused target, as the client sent it (`show errors`).
        assert!(
            String::from_utf8_lossy(&last.head).starts_with("GET /x/%2e%2e%2fadmin HTTP/1.1\r\n"),
            "{:?}",
            String::from_utf8_lossy(&last.head)
        );
    })
    .await;
}

#[tokio::test]
async fn match_only_routes_on_the_normal_path_and_forwards_the_clients() {
    bounded(10, async {
        let origins = [
            Origin::http("a", "").await,
            Origin::http("b", "").await,
            Origin::http("c", "").await,
        ];
        let mut addrs: Vec<_> = origins.iter().map(|o| o.addr).collect();
        addrs.push(dead_addr().await); // the tcp backend's server, unused here
        let d = start(&localize_addrs("config/examples/edge.toml", &addrs), &[]);
        let legacy = d.addr("legacy").unwrap();
        for target in ["/x/../admin", "//admin", "/%61dmin"] {
            assert_eq!(get(legacy, target, "").await.status, 403, "{target}");
        }
        for target in ["/a;v=1/./b", "/files/x%2Fy", "//two//slashes"] {
            assert_eq!(get(legacy, target, "").await.status, 200, "{target}");
            let line = format!("GET {target} HTTP/1.1");
            assert!(
                origins
                    .iter()
                    .flat_map(|o| o.heads())
                    .any(|h| h.starts_with(&line)),
                "{target} forwarded as sent"
            );
        }
        // Still refused in match-only: what the options reject.
        assert_eq!(get(legacy, "/a%00", "").await.status, 400);
    })
    .await;
}

#[tokio::test]
async fn the_balancer_and_redirects_see_the_normal_path() {
    bounded(20, async {
        let origins = [
            Origin::http("a", "").await,
            Origin::http("b", "").await,
            Origin::http("c", "").await,
        ];
        let mut addrs: Vec<_> = origins.iter().map(|o| o.addr).collect();
        addrs.push(dead_addr().await); // the tcp backend's server, unused here
        let d = start(&localize_addrs("config/examples/edge.toml", &addrs), &[]);
        let web = d.addr("www").unwrap();
        // Each path and its disguises land on one server (uri hashing).
        let mut servers = std::collections::BTreeSet::new();
        for i in 0..20 {
            let plain = format!("/p{i}/x");
            let first = get(web, &plain, "").await.text();
            servers.insert(first.clone());
            for disguise in [
                format!("/p{i}/./x"),
                format!("//p{i}//x"),
                format!("/q/../p{i}/x"),
            ] {
                assert_eq!(get(web, &disguise, "").await.text(), first, "{disguise}");
            }
        }
        assert!(servers.len() > 1, "the keys spread over the servers");

        // A redirect built from the path uses the normalised one.
        let rd = Conf::new()
            .frontend(
                Frontend::http("r")
                    .to("b")
                    .set("acl", value(r#"{ old = { path_prefix = "/old/" } }"#))
                    .set(
                        "rules",
                        value(r#"[{ redirect = { prefix = "https://new.example" }, if = "old" }]"#),
                    ),
            )
            .backend(Backend::new("b").server("s", origins[0].addr))
            .start();
        let mut c = TcpStream::connect(rd.addr("r").unwrap()).await.unwrap();
        let r = roundtrip(
            &mut c,
            b"GET /x/..//old/./page?q=1 HTTP/1.1\r\nHost: a\r\n\r\n",
        )
        .await
        .unwrap();
        assert_eq!(r.status, 302);
        assert_eq!(
            r.header("location").as_deref(),
            Some("https://new.example/old/page?q=1")
        );
    })
    .await;
}
