//! The access log through real sockets: every request has its line — those
//! fulcrum answers itself (400, 403, 302, 408, 429, 502, 503) included —
//! parsed back and matched to what was sent; JSON lines; request ids that
//! reach the server; tcp connections; reopening after a rotation.

use fulcrum_testkit as support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use fulcrum::daemon::Running;
use serde_json::Value;
use support::*;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

fn dir(test: &str) -> TempDir {
    TempDir::new(&format!("access-{test}"))
}

fn lines(p: &Path) -> Vec<String> {
    std::fs::read_to_string(p)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// One text line, split into its fields.
#[derive(Debug)]
struct Line {
    client: String,
    frontend: String,
    backend_server: String,
    status: u16,
    bytes_in: u64,
    bytes_out: u64,
    times: Vec<f64>,
    retries: u32,
    term: String,
    id: String,
    request: String,
}

fn parse(l: &str) -> Line {
    let (fields, request) = l.split_once(" \"").expect("a quoted request");
    let f: Vec<&str> = fields.split(' ').collect();
    assert_eq!(f.len(), 11, "{l}");
    assert!(f[0].ends_with('Z') && f[0].len() == 24, "{l}");
    Line {
        client: f[1].into(),
        frontend: f[2].into(),
        backend_server: f[3].into(),
        status: f[4].parse().unwrap(),
        bytes_in: f[5].parse().unwrap(),
        bytes_out: f[6].parse().unwrap(),
        times: f[7].split('/').map(|t| t.parse().unwrap()).collect(),
        retries: f[8].parse().unwrap(),
        term: f[9].into(),
        id: f[10].into(),
        request: request.trim_end_matches('"').into(),
    }
}

/// Frontend `web` with rules that deny, redirect, and route to a dead and a
/// misbehaving backend; `json` turns on the JSON format with query strings.
async fn http_daemon(test: &str, json: bool) -> (Running, Origin, PathBuf, TempDir) {
    let a = Origin::http("a", "").await;
    let bad = Origin::replying(b"HTTP/1.1 2x0 nope\r\n\r\n", Duration::ZERO).await;
    let dead = dead_addr().await;
    let d = dir(test);
    let mut conf = Conf::new().section("log", "access", "access.log").section(
        "log",
        "request_id",
        "X-Request-Id",
    );
    if json {
        conf = conf
            .section("log", "format", "json")
            .section("log", "query", true);
    }
    let running = conf
        .frontend(
            Frontend::web()
                .timeouts([("http_request", "300ms")])
                .set(
                    "acl",
                    table(["admin", "old", "dead", "bad"].map(|p| {
                        (p, value(&format!(r#"{{ path_prefix = "/{p}" }}"#)))
                    })),
                )
                .set(
                    "rules",
                    value(
                        r#"[{ deny = 403, if = "admin" }, { redirect = { location = "/new" }, if = "old" },
                            { use_backend = "dead", if = "dead" }, { use_backend = "bad", if = "bad" }]"#,
                    ),
                )
                .set("limits", value(r#"{ req_rate_per_source = "20/m" }"#)),
        )
        .backend(Backend::app(a.addr))
        .backend(Backend::new("dead").set("retries", 1).server("x", dead))
        .backend(Backend::new("bad").server("g", bad.addr))
        .start_as(&d.join("fulcrum.toml"));
    let log = d.join("access.log");
    (running, a, log, d)
}

#[tokio::test]
async fn every_request_has_its_line_including_fulcrums_own_answers() {
    bounded(30, async {
        let (d, a, log, _dir) = http_daemon("text", false).await;
        let web = d.addr("web").unwrap();
        let mut c = TcpStream::connect(web).await.unwrap();
        let me = c.local_addr().unwrap().to_string();
        let r = roundtrip(
            &mut c,
            b"GET /hello?secret=1 HTTP/1.1\r\nHost: www.example\r\nX-Request-Id: forged\r\n\r\n",
        )
        .await
        .unwrap();
        assert_eq!(r.status, 200);
        let post = b"POST /upload HTTP/1.1\r\nHost: www.example\r\nContent-Length: 5\r\n\r\nhello";
        assert_eq!(roundtrip(&mut c, post).await.unwrap().status, 200);
        assert_eq!(
            roundtrip(&mut c, b"GET /admin HTTP/1.1\r\nHost: h\r\n\r\n")
                .await
                .unwrap()
                .status,
            403
        );
        assert_eq!(
            roundtrip(&mut c, b"GET /old HTTP/1.1\r\nHost: h\r\n\r\n")
                .await
                .unwrap()
                .status,
            302
        );
        assert_eq!(get(web, "/dead", "").await.status, 503);
        assert_eq!(get(web, "/bad", "").await.status, 502);
        // Malformed: 400, with the client's address.
        let mut m = TcpStream::connect(web).await.unwrap();
        let bad_client = m.local_addr().unwrap().to_string();
        assert_eq!(
            roundtrip(&mut m, b"GET /x HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n")
                .await
                .unwrap()
                .status,
            400
        );
        // Too slow: 408.
        let mut s = TcpStream::connect(web).await.unwrap();
        s.write_all(b"GET /slow HTTP/1.1\r\n").await.unwrap();
        assert_eq!(read_response(&mut s).await.unwrap().status, 408);
        // Over the request rate: 429 (a burst of 20; 6 counted so far: the
        // malformed and the slow one never were requests).
        let mut statuses = Vec::new();
        for i in 0..16 {
            statuses.push(get(web, &format!("/r{i}"), "").await.status);
        }
        assert_eq!(
            statuses.iter().filter(|s| **s == 429).count(),
            2,
            "{statuses:?}"
        );
        drop(c);

        eventually(5, "every line written", || lines(&log).len() == 24).await;
        let all: Vec<Line> = lines(&log).iter().map(|l| parse(l)).collect();
        let find = |req: &str| {
            all.iter()
                .find(|l| l.request == req)
                .unwrap_or_else(|| panic!("no line for {req}: {all:#?}"))
        };
        let hello = find("GET www.example/hello");
        assert_eq!(
            (hello.client.as_str(), hello.frontend.as_str()),
            (me.as_str(), "web")
        );
        assert_eq!(
            (hello.backend_server.as_str(), hello.status),
            ("app/a", 200)
        );
        assert_eq!(hello.term, "--");
        assert_eq!(hello.times.len(), 4);
        assert!(hello.times.iter().all(|t| *t >= 0.0), "{hello:?}");
        assert!(
            hello.times[2] <= hello.times[3],
            "first byte before the end"
        );
        assert_eq!(
            hello.bytes_out,
            r.head.len() as u64 + 4 + r.body.len() as u64
        );
        // The id went to the server instead of the client's own.
        let seen = a.heads();
        assert!(
            seen[0].contains(&format!("x-request-id: {}", hello.id)),
            "{}",
            seen[0]
        );
        assert!(!seen[0].contains("forged"));
        assert_eq!(hello.id.len(), 16);
        let upload = find("POST www.example/upload");
        assert_eq!(upload.bytes_in, post.len() as u64);
        assert_ne!(upload.id, hello.id);

        let deny = find("GET h/admin");
        assert_eq!(
            (
                deny.status,
                deny.term.as_str(),
                deny.backend_server.as_str()
            ),
            (403, "PR", "-/-")
        );
        let redirect = find("GET h/old");
        assert_eq!((redirect.status, redirect.term.as_str()), (302, "LR"));
        let dead = find("GET test.example/dead");
        assert_eq!((dead.status, dead.term.as_str()), (503, "SC"));
        assert_eq!((dead.backend_server.as_str(), dead.retries), ("dead/x", 1));
        assert_eq!(dead.times[1], -1.0, "never connected");
        let bad = find("GET test.example/bad");
        assert_eq!((bad.status, bad.term.as_str()), (502, "SH"));
        let refused = find("GET /x");
        assert_eq!((refused.status, refused.term.as_str()), (400, "PR"));
        assert_eq!(refused.client, bad_client);
        let slow = all
            .iter()
            .find(|l| l.status == 408)
            .expect("the 408's line");
        assert_eq!(slow.term, "cR");
        assert_eq!(all.iter().filter(|l| l.status == 429).count(), 2);
        assert!(
            all.iter()
                .filter(|l| l.status == 429)
                .all(|l| l.term == "PR")
        );
        // Nothing dropped, every line counted.
        let g = d.stats().global;
        assert_eq!((g.log_lines, g.log_dropped), (24, 0));
    })
    .await;
}

#[tokio::test]
async fn json_lines_parse_back_with_the_query_when_asked() {
    bounded(30, async {
        let (d, _a, log, _dir) = http_daemon("json", true).await;
        let web = d.addr("web").unwrap();
        assert_eq!(get(web, "/q?x=1&y=\"2\"", "").await.status, 200);
        assert_eq!(get(web, "/admin", "").await.status, 403);
        eventually(5, "two lines", || lines(&log).len() == 2).await;
        let mut v: Vec<Value> = lines(&log)
            .iter()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        // Two connections: their lines come in the order they ended.
        v.sort_by_key(|l| l["status"].as_u64());
        assert_eq!(v[0]["path"], "/q?x=1&y=\"2\"");
        assert_eq!(v[0]["status"], 200);
        assert_eq!(v[0]["server"], "a");
        assert_eq!(v[0]["mode"], "http");
        assert_eq!(v[0]["termination"], "--");
        assert!(v[0]["total_ms"].as_f64().unwrap() >= v[0]["first_byte_ms"].as_f64().unwrap());
        assert_eq!(v[0]["request_id"].as_str().unwrap().len(), 16);
        assert_eq!(v[1]["status"], 403);
        assert_eq!(v[1]["backend"], "");
        assert_eq!(v[1]["connect_ms"], Value::Null);
        assert!(v[0]["time"].as_str().unwrap().ends_with('Z'));
    })
    .await;
}

#[tokio::test]
async fn tcp_connections_have_one_line_each_and_the_file_reopens() {
    bounded(30, async {
        let echo = Origin::start("echo", Behaviour::Echo).await;
        let d = dir("tcp");
        let running = Conf::new()
            .section("log", "access", "access.log")
            .frontend(Frontend::tcp("fe").to("be"))
            .backend(Backend::new("be").server("e", echo.addr))
            .start_as(&d.join("f.toml"));
        let log = d.join("access.log");
        let fe = running.addr("fe").unwrap();
        assert_eq!(exchange(fe, b"0123456789").await, b"0123456789");
        eventually(5, "one line", || lines(&log).len() == 1).await;
        let l = parse(&lines(&log)[0]);
        assert_eq!(
            (l.frontend.as_str(), l.backend_server.as_str()),
            ("fe", "be/e")
        );
        assert_eq!((l.bytes_in, l.bytes_out, l.status), (10, 10, 0));
        assert_eq!(
            (l.term.as_str(), l.request.as_str(), l.id.as_str()),
            ("--", "tcp", "-")
        );
        assert_eq!(l.times[2], -1.0, "no first byte in tcp mode");
        // Rotated: the next line goes to a new file.
        std::fs::rename(&log, d.join("access.log.1")).unwrap();
        running.reopen_logs();
        assert_eq!(exchange(fe, b"abc").await, b"abc");
        eventually(5, "a line in the new file", || lines(&log).len() == 1).await;
        assert_eq!(parse(&lines(&log)[0]).bytes_in, 3);
        assert_eq!(lines(&d.join("access.log.1")).len(), 1);
    })
    .await;
}

#[tokio::test]
async fn the_log_can_be_off() {
    bounded(30, async {
        let a = Origin::http("a", "").await;
        let d = Conf::new()
            .section("log", "access", "off")
            .frontend(Frontend::web())
            .backend(Backend::app(a.addr))
            .start();
        assert!(d.access_log().is_none());
        assert_eq!(get(d.addr("web").unwrap(), "/", "").await.status, 200);
        assert_eq!(d.stats().global.log_lines, 0);
    })
    .await;
}
