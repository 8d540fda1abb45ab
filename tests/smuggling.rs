//! The request-smuggling corpus through real sockets: every malformed or
//! ambiguous request is rejected with its status, the connection closes, and the
//! origin never sees the request smuggled behind it.

use fulcrum_testkit as support;

use std::net::SocketAddr;
use std::time::Duration;

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The request every case carries behind it: it must never reach the origin.
const SMUGGLED: &[u8] = b"GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n";

/// An origin that records every byte it receives and never answers; what all
/// its connections received, in order of connection.
async fn recording_origin() -> (SocketAddr, Origin) {
    let o = Origin::start("r", Behaviour::Record).await;
    (o.addr, o)
}

fn everything(o: &Origin) -> String {
    String::from_utf8_lossy(&o.received_all()).into_owned()
}

/// The last cases of the corpus have a valid head and a malformed chunked body.
const BODY_CASES: usize = 7;

fn corpus() -> Vec<(&'static str, Vec<u8>, u16)> {
    let long_uri = [
        b"GET /".as_slice(),
        &[b'a'; 20_000],
        b" HTTP/1.1\r\nHost: a\r\n\r\n",
    ]
    .concat();
    let mut many = b"GET / HTTP/1.1\r\nHost: a\r\n".to_vec();
    for i in 0..120 {
        many.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
    }
    many.extend_from_slice(b"\r\n");
    let mut big = b"GET / HTTP/1.1\r\nHost: a\r\n".to_vec();
    for _ in 0..40 {
        big.extend_from_slice(format!("X-Big: {}\r\n", "v".repeat(500)).as_bytes());
    }
    big.extend_from_slice(b"\r\n");
    let b = |s: &str| s.as_bytes().to_vec();
    vec![
        (
            "CL.TE",
            b(
                "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            ),
            400,
        ),
        (
            "TE.CL",
            b(
                "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 6\r\n\r\n0\r\n\r\n",
            ),
            400,
        ),
        (
            "two differing CL",
            b("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nxx"),
            400,
        ),
        (
            "CL with sign",
            b("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +2\r\n\r\nxx"),
            400,
        ),
        (
            "CL in hex",
            b("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x2\r\n\r\nxx"),
            400,
        ),
        (
            "CL with inner space",
            b("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2 2\r\n\r\nxx"),
            400,
        ),
        (
            "CL empty",
            b("POST / HTTP/1.1\r\nHost: a\r\nContent-Length:\r\n\r\n"),
            400,
        ),
        (
            "CL overflow",
            b("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999\r\n\r\n"),
            400,
        ),
        (
            "CL negative",
            b("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n"),
            400,
        ),
        (
            "CL list",
            b("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2, 2\r\n\r\nxx"),
            400,
        ),
        (
            "TE unknown coding",
            b("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n"),
            501,
        ),
        (
            "TE chunked not last",
            b("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n"),
            400,
        ),
        (
            "TE chunked twice",
            b(
                "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
            ),
            400,
        ),
        (
            "TE leading comma",
            b("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: ,chunked\r\n\r\n"),
            400,
        ),
        (
            "TE with parameter",
            b("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked;q=1\r\n\r\n"),
            400,
        ),
        (
            "TE without chunked",
            b("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n"),
            400,
        ),
        (
            "TE in HTTP/1.0",
            b("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
            400,
        ),
        (
            "space before colon",
            b("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n"),
            400,
        ),
        (
            "obs-fold",
            b("GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n  folded\r\n\r\n"),
            400,
        ),
        (
            "space before first header",
            b("GET / HTTP/1.1\r\n Host: a\r\n\r\n"),
            400,
        ),
        ("bare LF everywhere", b("GET / HTTP/1.1\nHost: a\n\n"), 400),
        (
            "bare LF in one line",
            b("GET / HTTP/1.1\r\nHost: a\nX: b\r\n\r\n"),
            400,
        ),
        ("bare CR", b("GET / HTTP/1.1\r\nHost: a\rX: b\r\n\r\n"), 400),
        (
            "NUL in value",
            b("GET / HTTP/1.1\r\nHost: a\r\nX: a\0b\r\n\r\n"),
            400,
        ),
        (
            "control char in value",
            b("GET / HTTP/1.1\r\nHost: a\r\nX: a\x01b\r\n\r\n"),
            400,
        ),
        (
            "DEL in value",
            b("GET / HTTP/1.1\r\nHost: a\r\nX: a\x7fb\r\n\r\n"),
            400,
        ),
        (
            "bad name char",
            b("GET / HTTP/1.1\r\nHost: a\r\nX<y>: b\r\n\r\n"),
            400,
        ),
        ("HTTP/0.9", b("GET /\r\n\r\n"), 400),
        ("HTTP/1.2", b("GET / HTTP/1.2\r\nHost: a\r\n\r\n"), 505),
        (
            "HTTP/2.0 over h1",
            b("GET / HTTP/2.0\r\nHost: a\r\n\r\n"),
            505,
        ),
        ("missing Host", b("GET / HTTP/1.1\r\n\r\n"), 400),
        (
            "two Hosts",
            b("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"),
            400,
        ),
        (
            "Host with space",
            b("GET / HTTP/1.1\r\nHost: a b\r\n\r\n"),
            400,
        ),
        (
            "Host with bad port",
            b("GET / HTTP/1.1\r\nHost: a:x\r\n\r\n"),
            400,
        ),
        (
            "absolute-form with userinfo",
            b("GET http://u@evil/ HTTP/1.1\r\nHost: a\r\n\r\n"),
            400,
        ),
        (
            "CONNECT",
            b("CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n"),
            400,
        ),
        (
            "asterisk outside OPTIONS",
            b("GET * HTTP/1.1\r\nHost: a\r\n\r\n"),
            400,
        ),
        (
            "unknown expectation",
            b("POST / HTTP/1.1\r\nHost: a\r\nExpect: 200-ok\r\nContent-Length: 0\r\n\r\n"),
            417,
        ),
        (
            "tab in path",
            b("GET /a\tb HTTP/1.1\r\nHost: a\r\n\r\n"),
            400,
        ),
        (
            "method with junk",
            b("G(T / HTTP/1.1\r\nHost: a\r\n\r\n"),
            400,
        ),
        ("URI too long", long_uri, 414),
        ("too many headers", many, 431),
        ("head too large", big, 431),
        // The head is fine; the chunked body is not. The head reaches the origin,
        // the connection is cut mid-body, and nothing after it is forwarded.
        (
            "chunk size in hex prefix",
            b(
                "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n",
            ),
            400,
        ),
        (
            "empty chunk size",
            b(
                "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n\r\nhello\r\n0\r\n\r\n",
            ),
            400,
        ),
        (
            "bare LF after chunk size",
            b(
                "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n",
            ),
            400,
        ),
        (
            "LF in chunk extension",
            b(
                "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;a\nb\r\nhello\r\n0\r\n\r\n",
            ),
            400,
        ),
        (
            "missing CRLF after chunk data",
            b(
                "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloX\r\n0\r\n\r\n",
            ),
            400,
        ),
        (
            "chunk size overflow",
            b(
                "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n10000000000000000\r\n",
            ),
            400,
        ),
        (
            "bare semicolon extension",
            b(
                "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;\r\nhello\r\n0\r\n\r\n",
            ),
            400,
        ),
    ]
}

#[tokio::test]
async fn every_malformed_request_is_rejected_and_nothing_is_smuggled() {
    bounded(60, async {
        let (origin, seen) = recording_origin().await;
        let d = Conf::new()
            .frontend(
                Frontend::http("web")
                    .to("app")
                    .timeouts([("http_request", "2s")]),
            )
            .backend(
                Backend::new("app")
                    .timeouts([("server", "2s")])
                    .server("a", origin),
            )
            .start();
        let cases = corpus();
        assert!(cases.len() >= 40);
        for (name, req, status) in &cases {
            let mut c = TcpStream::connect(d.addr("web").unwrap()).await.unwrap();
            let mut bytes = req.clone();
            bytes.extend_from_slice(SMUGGLED);
            let _ = c.write_all(&bytes).await;
            let mut out = Vec::new();
            let _ = tokio::time::timeout(Duration::from_secs(5), c.read_to_end(&mut out)).await;
            let text = String::from_utf8_lossy(&out);
            assert!(
                text.starts_with(&format!("HTTP/1.1 {status} ")),
                "{name}: {text}"
            );
            assert!(text.contains("connection: close"), "{name}");
            assert_eq!(
                text.matches("HTTP/1.1").count(),
                1,
                "{name}: one response only"
            );
        }
        // Once the daemon closed every client connection, nothing more can
        // reach the origin from them; and once the origin read the heads that
        // were forwarded, what it has is all it gets.
        eventually(5, "every client connection closed", || {
            d.stats().frontend("web").unwrap().conn_cur == 0
        })
        .await;
        eventually(5, "the forwarded heads arrived", || {
            everything(&seen).matches("POST / HTTP/1.1").count() >= BODY_CASES
        })
        .await;
        let seen = everything(&seen);
        assert!(
            !seen.contains("/smuggled"),
            "a smuggled request reached the origin:\n{seen}"
        );
        // Only the heads whose bodies failed later were forwarded at all.
        assert_eq!(
            seen.matches("POST / HTTP/1.1").count(),
            BODY_CASES,
            "{seen}"
        );
        let st = d.stats();
        let rejected: u64 = st
            .frontend("web")
            .unwrap()
            .http_rejected
            .iter()
            .map(|(_, n)| n)
            .sum();
        assert_eq!(rejected as usize, cases.len());
    })
    .await;
}

/// A `Connection` header naming a framing or routing field (issue 18): the
/// request is refused with 400 and its own class, and the origin sees nothing —
/// not the head, not the body, not the request the body would smuggle.
#[tokio::test]
async fn connection_naming_a_framing_field_is_refused() {
    bounded(30, async {
        let (origin, seen) = recording_origin().await;
        let d = Conf::new()
            .frontend(Frontend::http("web").to("app"))
            .backend(Backend::new("app").server("a", origin))
            .start();
        let cases: [&[u8]; 6] = [
            b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 35\r\nConnection: close, Content-Length\r\n\r\nGET /SMUGGLED HTTP/1.1\r\nHost: x\r\n\r\n",
            b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: keep-alive, Transfer-Encoding\r\n\r\n22\r\nGET /SMUGGLED HTTP/1.1\r\nHost: x\r\n\r\n\r\n0\r\n\r\n",
            b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 35\r\nConnection: content-length\r\n\r\nGET /SMUGGLED HTTP/1.1\r\nHost: x\r\n\r\n",
            b"GET /a HTTP/1.1\r\nHost: x\r\nConnection: Host\r\n\r\n",
            b"GET /a HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\nConnection: TRANSFER-ENCODING\r\n\r\n",
            b"POST /a HTTP/1.0\r\nHost: x\r\nContent-Length: 35\r\nConnection: keep-alive,content-length\r\n\r\nGET /SMUGGLED HTTP/1.1\r\nHost: x\r\n\r\n",
        ];
        for raw in cases {
            let mut c = TcpStream::connect(d.addr("web").unwrap()).await.unwrap();
            c.write_all(raw).await.unwrap();
            let mut out = Vec::new();
            let _ = tokio::time::timeout(Duration::from_secs(5), c.read_to_end(&mut out)).await;
            let text = String::from_utf8_lossy(&out);
            assert!(text.starts_with("HTTP/1.1 400 "), "{text}");
            assert_eq!(text.matches("HTTP/1.1").count(), 1, "{text}");
        }
        let st = d.stats();
        let fe = st.frontend("web").unwrap();
        assert_eq!(fe.http_rejected, vec![("connection_framing", 6)]);
        assert_eq!(fe.last_rejected.last().unwrap().class, "connection_framing");
        // Nothing was forwarded: not the head, not what the body held.
        let seen = everything(&seen);
        assert_eq!(seen, "", "the origin received:\n{seen}");
    })
    .await;
}

/// A server cannot unframe its response either: `Connection` naming
/// Content-Length or Transfer-Encoding is a 502, the connection is not reused,
/// and the body it framed never reaches the client as a second response.
#[tokio::test]
async fn a_response_whose_connection_names_its_framing_is_a_502() {
    bounded(30, async {
        for answer in [
            &b"HTTP/1.1 200 OK\r\nContent-Length: 38\r\nConnection: Content-Length\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: keep-alive, Transfer-Encoding\r\n\r\n0\r\n\r\n",
        ] {
            let o = Origin::start_http(answer).await;
            let d = Conf::new()
                .frontend(Frontend::http("web").to("app"))
                .backend(Backend::new("app").set("retries", 0).server("a", o.addr))
                .start();
            let web = d.addr("web").unwrap();
            for _ in 0..2 {
                let r = get(web, "/", "").await;
                assert_eq!(r.status, 502, "{}", r.head);
            }
            assert_eq!(o.conns(), 2, "a server connection is never reused after it");
            assert_eq!(d.stats().backend("app").unwrap().http_bad_responses, 2);
        }
    })
    .await;
}
