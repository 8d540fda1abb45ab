//! Balancing algorithms in tcp mode, through real sockets: `Hello` origins name
//! themselves, so each connection shows which server it reached.

use fulcrum_testkit as support;

use std::collections::HashMap;

use support::*;

struct Pool {
    origins: [Origin; 3],
}

impl Pool {
    async fn new() -> Pool {
        Pool {
            origins: [
                Origin::start("a", Behaviour::Hello).await,
                Origin::start("b", Behaviour::Hello).await,
                Origin::start("c", Behaviour::Hello).await,
            ],
        }
    }

    fn daemon(
        &self,
        balance: &str,
        weights: [u32; 3],
        accept_proxy: bool,
        extra_listen: &[&str],
    ) -> fulcrum::daemon::Running {
        let mut listen = vec!["127.0.0.1:0"];
        listen.extend_from_slice(extra_listen);
        let mut be = Backend::new("be").set("balance", value(balance));
        for (o, w) in self.origins.iter().zip(weights) {
            be = be.server_with(o.name, o.addr, table([("weight", w)]));
        }
        Conf::new()
            .frontend(
                Frontend::tcp("fe")
                    .to("be")
                    .set("listen", listen)
                    .set("accept_proxy", accept_proxy),
            )
            .backend(be)
            .start()
    }
}

fn proxy_from(ip: &str) -> Vec<u8> {
    format!("PROXY TCP4 {ip} 192.0.2.1 40000 443\r\n").into_bytes()
}

#[tokio::test]
async fn wrr_is_smooth_through_sockets() {
    bounded(10, async {
        let p = Pool::new().await;
        let d = p.daemon("\"wrr\"", [5, 1, 1], false, &[]);
        let mut seq = String::new();
        for _ in 0..14 {
            seq += &hello(d.addr("fe").unwrap(), b"").await;
        }
        assert_eq!(seq, "aabacaaaabacaa");
    })
    .await;
}

#[tokio::test]
async fn lc_follows_open_connections() {
    bounded(10, async {
        let p = Pool::new().await;
        let d = p.daemon("\"lc\"", [1, 1, 1], false, &[]);
        let fe = d.addr("fe").unwrap();
        // Three long connections, one per server.
        let mut open = HashMap::new();
        for _ in 0..3 {
            let (name, s) = hello_open(fe).await;
            open.insert(name, s);
        }
        assert_eq!(open.len(), 3);
        // a is now the only server without a connection: the next one goes there.
        drop(open.remove("a"));
        eventually(5, "a's connection ended", || {
            d.stats()
                .backend("be")
                .unwrap()
                .server("a")
                .unwrap()
                .conn_cur
                == 0
        })
        .await;
        let (name, _a) = hello_open(fe).await;
        assert_eq!(name, "a", "a has the fewest connections");
        let (name, _s) = hello_open(fe).await;
        assert_ne!(name, "a", "a now has as many as the others");
    })
    .await;
}

#[tokio::test]
async fn wlc_divides_by_weight() {
    bounded(10, async {
        let p = Pool::new().await;
        let d = p.daemon("\"wlc\"", [1, 2, 5], false, &[]);
        let fe = d.addr("fe").unwrap();
        let mut held = Vec::new();
        let mut count: HashMap<String, usize> = HashMap::new();
        for _ in 0..16 {
            let (name, s) = hello_open(fe).await;
            *count.entry(name).or_default() += 1;
            held.push(s);
        }
        assert_eq!(
            (count["a"], count["b"], count["c"]),
            (2, 4, 10),
            "{count:?}"
        );
    })
    .await;
}

#[tokio::test]
async fn sh_keeps_clients_and_two_instances_agree() {
    bounded(20, async {
        let p = Pool::new().await;
        let d1 = p.daemon("\"sh\"", [1, 1, 1], true, &[]);
        let d2 = p.daemon("\"sh\"", [1, 1, 1], true, &[]);
        let mut spread: HashMap<String, usize> = HashMap::new();
        for i in 0..60 {
            let ip = format!("198.51.{}.{}", i / 7, 10 + i);
            let first = hello(d1.addr("fe").unwrap(), &proxy_from(&ip)).await;
            assert_eq!(
                hello(d1.addr("fe").unwrap(), &proxy_from(&ip)).await,
                first,
                "{ip} moved"
            );
            assert_eq!(
                hello(d2.addr("fe").unwrap(), &proxy_from(&ip)).await,
                first,
                "instances disagree on {ip}"
            );
            *spread.entry(first).or_default() += 1;
        }
        assert_eq!(spread.len(), 3, "{spread:?}");
        // Server b goes down: only b's clients move.
        let before: Vec<String> = {
            let mut v = Vec::new();
            for i in 0..60 {
                v.push(
                    hello(
                        d1.addr("fe").unwrap(),
                        &proxy_from(&format!("198.51.{}.{}", i / 7, 10 + i)),
                    )
                    .await,
                );
            }
            v
        };
        set_health(&d1, "be", "b", false);
        for (i, was) in before.iter().enumerate() {
            let now = hello(
                d1.addr("fe").unwrap(),
                &proxy_from(&format!("198.51.{}.{}", i / 7, 10 + i)),
            )
            .await;
            if was == "b" {
                assert_ne!(now, "b");
            } else {
                assert_eq!(&now, was);
            }
        }
    })
    .await;
}

#[tokio::test]
async fn sh_prefix_keeps_a_network_together() {
    bounded(10, async {
        let p = Pool::new().await;
        let d = p.daemon(
            "{ algorithm = \"sh\", prefix = true }",
            [1, 1, 1],
            true,
            &[],
        );
        let first = hello(d.addr("fe").unwrap(), &proxy_from("203.0.113.1")).await;
        for host in 2..40 {
            let got = hello(
                d.addr("fe").unwrap(),
                &proxy_from(&format!("203.0.113.{host}")),
            )
            .await;
            assert_eq!(got, first);
        }
    })
    .await;
}

#[tokio::test]
async fn dh_maps_each_local_address_to_its_server() {
    bounded(10, async {
        let p = Pool::new().await;
        // One frontend on four loopback addresses: the destination is the key.
        let d = p.daemon(
            "\"dh\"",
            [1, 1, 1],
            false,
            &["127.0.0.2:0", "127.0.0.3:0", "127.0.0.4:0"],
        );
        let addrs = d.addrs("fe").to_vec();
        assert_eq!(addrs.len(), 4);
        for a in &addrs {
            let first = hello(*a, b"").await;
            for _ in 0..5 {
                assert_eq!(hello(*a, b"").await, first, "{a}");
            }
        }
    })
    .await;
}

#[tokio::test]
async fn lblc_keeps_a_destination_until_its_server_is_overloaded() {
    bounded(10, async {
        let p = Pool::new().await;
        let d = p.daemon("\"lblc\"", [2, 2, 2], false, &[]);
        let fe = d.addr("fe").unwrap();
        let (home, s1) = hello_open(fe).await;
        let (n2, s2) = hello_open(fe).await;
        assert_eq!(n2, home, "in-flight 1 ≤ weight 2: not overloaded");
        let (n3, s3) = hello_open(fe).await;
        assert_eq!(n3, home, "in-flight 2 ≤ weight 2");
        // in-flight 3 > weight 2 and the others are idle: re-picked elsewhere.
        let (n4, _s4) = hello_open(fe).await;
        assert_ne!(n4, home);
        drop((s1, s2, s3));
        // The new server is remembered.
        assert_eq!(hello(fe, b"").await, n4);
    })
    .await;
}

#[tokio::test]
async fn random_and_p2c_reach_every_server() {
    bounded(10, async {
        for algo in [
            "\"random\"",
            "\"p2c\"",
            "\"p2c_ewma\"",
            "{ algorithm = \"lblcr\", expire = \"1m\" }",
        ] {
            let p = Pool::new().await;
            let d = p.daemon(algo, [1, 1, 1], false, &[]);
            let mut held = Vec::new();
            let mut seen: HashMap<String, usize> = HashMap::new();
            for _ in 0..30 {
                let (name, s) = hello_open(d.addr("fe").unwrap()).await;
                *seen.entry(name).or_default() += 1;
                held.push(s);
            }
            assert_eq!(seen.len(), 3, "{algo}: {seen:?}");
        }
    })
    .await;
}

#[tokio::test]
async fn hash_balance_factor_bounds_a_hot_key() {
    bounded(10, async {
        for (balance, max_on_one) in [
            ("\"sh\"", 9),
            ("{ algorithm = \"sh\", hash_balance_factor = 1.25 }", 4),
        ] {
            let p = Pool::new().await;
            let d = p.daemon(balance, [1, 1, 1], true, &[]);
            // Nine connections held open, all from one client address.
            let mut held = Vec::new();
            let mut count: HashMap<String, usize> = HashMap::new();
            for _ in 0..9 {
                let mut s = tokio::net::TcpStream::connect(d.addr("fe").unwrap())
                    .await
                    .unwrap();
                tokio::io::AsyncWriteExt::write_all(&mut s, &proxy_from("198.51.100.1"))
                    .await
                    .unwrap();
                let mut name = [0u8; 2];
                tokio::io::AsyncReadExt::read_exact(&mut s, &mut name)
                    .await
                    .unwrap();
                *count
                    .entry(String::from_utf8_lossy(&name[..1]).into_owned())
                    .or_default() += 1;
                held.push(s);
            }
            let max = *count.values().max().unwrap();
            assert_eq!(max, max_on_one, "{balance}: {count:?}");
        }
    })
    .await;
}
