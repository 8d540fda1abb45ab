//! ns per request for the per-source tables under a flood of distinct
//! sources: the limits (`limits.rs`) and source persistence (`l7::persist`),
//! each bounded at 100,000 entries while 100,000 (then 1,000,000) distinct
//! addresses come by, so every new one evicts. `cargo bench --bench tables`;
//! the figures are in README "Per-source limits".

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, black_box, criterion_group, criterion_main};
use fulcrum::config::routing::{Rate, SourceLimits};
use fulcrum::limits::Limiter;
use fulcrum::table::Sticky;

fn addr(n: u32) -> IpAddr {
    // Spread over the address space like real clients.
    IpAddr::from(n.wrapping_mul(2_654_435_761).to_be_bytes())
}

fn bench(c: &mut Criterion) {
    let limiter = Arc::new(Limiter::new(SourceLimits {
        conn_per_source: Some(100),
        conn_rate: Rate::parse("100/s"),
        req_rate: Rate::parse("100/s"),
        table_size: 100_000,
        expire: Duration::from_secs(60),
        unless: None,
    }));
    let persist = Sticky::new(100_000);
    let now = Instant::now();
    let mut g = c.benchmark_group("per_source");
    g.measurement_time(Duration::from_secs(3));
    for distinct in [100_000u32, 1_000_000] {
        let mut n = 0u32;
        g.bench_function(format!("limits connect+close, {distinct} sources"), |b| {
            b.iter(|| {
                n = (n + 1) % distinct;
                drop(black_box(limiter.connect(addr(n), now)));
            })
        });
        g.bench_function(format!("limits request, {distinct} sources"), |b| {
            b.iter(|| {
                n = (n + 1) % distinct;
                black_box(limiter.request(addr(n), now)).ok();
            })
        });
        g.bench_function(format!("persistence get+put, {distinct} sources"), |b| {
            b.iter(|| {
                n = (n + 1) % distinct;
                let ip = addr(n);
                if black_box(persist.get(ip, Duration::from_secs(60), now)).is_none() {
                    persist.put(ip, 1, now);
                }
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
