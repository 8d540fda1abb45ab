//! ns per pick for every algorithm with 3, 100 and 1000 servers.
//! `cargo bench --bench balancers`; the table in README comes from here.

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, black_box, criterion_group, criterion_main};
use fulcrum::balancers::{self, PickCtx};
use fulcrum::config::{Algorithm, UriKey};
use fulcrum::server::{Pool, Server, ServerState};

fn servers(n: usize) -> Vec<Server> {
    let pool = Arc::new(Pool::default());
    (0..n)
        .map(|i| {
            let w = 1 + (i % 4) as u32;
            let s = Server {
                name: format!("srv{i}").into(),
                addr: ([127, 0, 0, 1], 20_000 + i as u16).into(),
                weight: w,
                maxconn: None,
                send_proxy: None,
                cookie: "s".into(),
                backup: false,
                check: None,
                tls: None,
                state: Arc::new(ServerState::new(w, pool.clone())),
            };
            // Some live load, so least-loaded algorithms have something to compare.
            s.state.set_inflight((i * 7 % 13) as u32);
            s
        })
        .collect()
}

fn algorithms() -> Vec<Algorithm> {
    let d = Duration::from_secs(60);
    vec![
        Algorithm::Rr,
        Algorithm::Wrr,
        Algorithm::Lc,
        Algorithm::Wlc,
        Algorithm::Random,
        Algorithm::P2c,
        Algorithm::P2cEwma {
            decay: Duration::from_secs(10),
        },
        Algorithm::Sh {
            prefix: false,
            factor: None,
        },
        Algorithm::Sh {
            prefix: false,
            factor: Some(1.25),
        },
        Algorithm::Dh { factor: None },
        Algorithm::Uri {
            key: UriKey {
                depth: Some(2),
                ..UriKey::default()
            },
            factor: None,
        },
        Algorithm::UrlParam {
            param: "user".into(),
            factor: None,
        },
        Algorithm::Lblc { expire: d },
        Algorithm::Lblcr {
            expire: d,
            shrink: d,
        },
    ]
}

fn label(a: &Algorithm) -> String {
    match a {
        Algorithm::Sh {
            factor: Some(_), ..
        } => "sh+bound".into(),
        a => a.name().into(),
    }
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("pick");
    g.measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(500));
    let paths: Vec<String> = (0..256).map(|i| format!("/img/{i}/cat.png")).collect();
    let hosts: Vec<String> = (0..256).map(|i| format!("site{i}.example")).collect();
    for n in [3usize, 100, 1000] {
        let s = servers(n);
        for algo in algorithms() {
            let b = balancers::build(&algo, &s);
            let now = Instant::now();
            g.bench_with_input(BenchmarkId::new(label(&algo), n), &n, |bch, _| {
                let mut k: u64 = 0;
                bch.iter(|| {
                    k = k.wrapping_add(0x9e37_79b9_7f4a_7c15);
                    let j = (k >> 56) as usize;
                    let ctx = PickCtx {
                        src: std::net::Ipv4Addr::from((k >> 32) as u32).into(),
                        dst: ([127, 0, 0, 1], 80).into(),
                        host: Some(&hosts[j]),
                        path: Some(&paths[j]),
                        query: Some("a=1&user=bob"),
                        avoid: None,
                        now,
                        rand: k,
                    };
                    black_box(b.pick(&s, black_box(&ctx)))
                })
            });
        }
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
