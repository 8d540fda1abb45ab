//! ns per request for the rule walk (`rules::decide`): no rules, and the
//! routing example (11 ACLs, 11 rules) on requests that take different paths.
//! `cargo bench --bench routing`; the figures are in README "Routing".

use std::time::Duration;

use criterion::{Criterion, black_box, criterion_group, criterion_main};
use fulcrum::rules::acl::ReqView;
use fulcrum::rules::decide;

fn bench(c: &mut Criterion) {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/config/examples/routing.toml");
    let text = std::fs::read_to_string(path).expect("the routing example");
    let cfg = fulcrum::config::parse(path, &text).expect("a valid example");
    let f = &cfg.frontends[0];
    let headers = [
        httparse::Header {
            name: "User-Agent",
            value: b"bench/1.0",
        },
        httparse::Header {
            name: "Accept",
            value: b"*/*",
        },
        httparse::Header {
            name: "Cookie",
            value: b"theme=dark; session=abc123",
        },
    ];
    let req = |path: &'static str, query: Option<&'static str>| ReqView {
        method: "GET",
        path,
        query,
        host: Some("www.example.com"),
        headers: &headers,
        src: "203.0.113.9".parse().expect("an address"),
        dst_port: 80,
        tls: None,
    };
    let mut g = c.benchmark_group("route");
    g.measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(500));
    let plain = req("/index.html", None);
    g.bench_function("no_rules", |b| {
        b.iter(|| black_box(decide(&[], &[], black_box(&plain), 0, 1)))
    });
    for (name, r) in [
        ("example_default", req("/index.html", None)),
        ("example_api", req("/api/v2/users", Some("page=2"))),
        ("example_static", req("/img/logo.svg", None)),
        ("example_redirect", req("/blog/2026/hello", Some("lang=en"))),
    ] {
        g.bench_function(name, |b| {
            b.iter(|| {
                black_box(decide(
                    &f.rules,
                    &f.acls,
                    black_box(&r),
                    f.default_backend,
                    1,
                ))
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
