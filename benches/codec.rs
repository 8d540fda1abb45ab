//! ns per request head (`l7::codec::parse_request`) and per chunked body
//! (`l7::chunked::ChunkedDecoder::advance`): the strict codec's own cost,
//! apart from the sockets. `cargo bench --bench codec`.

use std::time::Duration;

use criterion::{Criterion, black_box, criterion_group, criterion_main};
use fulcrum::l7::chunked::ChunkedDecoder;
use fulcrum::l7::codec::{Limits, parse_request};

/// A browser-like GET (ten fields) and a small chunked POST head.
const GET: &[u8] = b"GET /static/app.js?v=3 HTTP/1.1\r\nHost: www.example.com\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64) bench\r\nAccept: */*\r\n\
Accept-Language: en-US,en;q=0.5\r\nAccept-Encoding: gzip, deflate, br\r\n\
Referer: https://www.example.com/\r\nCookie: theme=dark; session=abc123\r\n\
Connection: keep-alive\r\nSec-Fetch-Dest: script\r\nPragma: no-cache\r\n\r\n";
const POST: &[u8] = b"POST /api/upload HTTP/1.1\r\nHost: api.example.com\r\n\
Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n";

/// 16 chunks of 1 KiB, one with an extension, and a trailer section.
fn chunked_body() -> Vec<u8> {
    let mut b = Vec::new();
    for i in 0..16 {
        if i == 3 {
            b.extend_from_slice(b"400;name=\"value\"\r\n");
        } else {
            b.extend_from_slice(b"400\r\n");
        }
        b.extend(std::iter::repeat_n(b'x', 1024));
        b.extend_from_slice(b"\r\n");
    }
    b.extend_from_slice(b"0\r\nX-Checksum: 1234\r\nContent-Length: 9\r\n\r\n");
    b
}

fn bench(c: &mut Criterion) {
    let limits = Limits::default();
    let mut g = c.benchmark_group("codec");
    for (name, head) in [("get_10_fields", GET), ("post_chunked", POST)] {
        g.bench_function(name, |b| {
            b.iter(|| {
                let mut headers = [httparse::EMPTY_HEADER; 64];
                let h = parse_request(black_box(head), &mut headers, &limits);
                black_box(h.map(|h| h.map(|h| h.len)))
            })
        });
    }
    let body = chunked_body();
    let mut out = Vec::with_capacity(body.len());
    g.bench_function("chunked_16k", |b| {
        b.iter(|| {
            out.clear();
            let mut d = ChunkedDecoder::default();
            let n = d.advance(black_box(&body), &mut out);
            black_box((n, d.is_done()))
        })
    });
    // The same body arriving 7 bytes at a time: the per-byte state walk.
    g.bench_function("chunked_16k_in_7_byte_reads", |b| {
        b.iter(|| {
            out.clear();
            let mut d = ChunkedDecoder::default();
            for piece in black_box(&body).chunks(7) {
                let _ = d.advance(piece, &mut out);
            }
            black_box(d.is_done())
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = bench
}
criterion_main!(benches);
