//! The stats page through real sockets: counters exact after known traffic,
//! percentiles that match an origin's delay, the JSON schema, Prometheus
//! text that `promtool` accepts, HAProxy's CSV header, basic auth, and the
//! admin actions with their CSRF guard.

use fulcrum_testkit as support;

use std::net::SocketAddr;
use std::time::Duration;

use fulcrum::daemon::Running;
use serde_json::Value;
use support::*;
use tokio::net::TcpStream;

/// GET `path` on the stats page with `extra` header lines; (status, head, body).
async fn page(d: &Running, path: &str, extra: &str) -> Resp {
    get(d.stats_addr().expect("stats page on"), path, extra).await
}

async fn json(d: &Running, path: &str) -> Value {
    let r = page(d, path, "").await;
    assert_eq!(r.status, 200, "{}", r.head);
    assert!(
        r.header("content-type")
            .unwrap()
            .starts_with("application/json")
    );
    serde_json::from_slice(&r.body).unwrap_or_else(|e| panic!("{e}: {}", r.text()))
}

/// The stats page, frontend `web` (denying /admin) and backend `app` (rr) on
/// servers `a` and `b`.
fn two_conf(a: std::net::SocketAddr, b: std::net::SocketAddr) -> Conf {
    Conf::new()
        .section("stats", "listen", "127.0.0.1:0")
        .frontend(
            Frontend::web()
                .set("acl", value(r#"{ admin = { path_prefix = "/admin" } }"#))
                .set("rules", value(r#"[{ deny = 403, if = "admin" }]"#)),
        )
        .backend(
            Backend::new("app")
                .set("balance", "rr")
                .server("a", a)
                .server("b", b),
        )
}

async fn two() -> (Running, Origin, Origin) {
    let a = Origin::http("a", "").await;
    let b = Origin::http("b", "").await;
    let d = two_conf(a.addr, b.addr).start();
    (d, a, b)
}

#[tokio::test]
async fn counters_are_exact_after_known_traffic() {
    bounded(30, async {
        let (d, a, b) = two().await;
        let web = d.addr("web").unwrap();
        // 30 requests on one kept-alive connection, 10 on connections of their own,
        // 4 POSTs with 1,000-byte bodies, 3 denied, 2 malformed.
        let mut c = TcpStream::connect(web).await.unwrap();
        let mut got_out = 0;
        for i in 0..30 {
            let r = roundtrip(
                &mut c,
                format!("GET /k{i} HTTP/1.1\r\nHost: h\r\n\r\n").as_bytes(),
            )
            .await
            .unwrap();
            assert_eq!(r.status, 200);
            got_out += r.head.len() + 4 + r.body.len();
        }
        for i in 0..10 {
            let r = get(web, &format!("/n{i}"), "").await;
            got_out += r.head.len() + 4 + r.body.len();
        }
        let body = "x".repeat(1000);
        for _ in 0..4 {
            let raw = format!("POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 1000\r\n\r\n{body}");
            let r = roundtrip(&mut c, raw.as_bytes()).await.unwrap();
            assert_eq!(r.status, 200);
            got_out += r.head.len() + 4 + r.body.len();
        }
        for _ in 0..3 {
            assert_eq!(get(web, "/admin/x", "").await.status, 403);
        }
        for _ in 0..2 {
            let mut m = TcpStream::connect(web).await.unwrap();
            let r = roundtrip(&mut m, b"GET /x HTTP/1.1\r\nHost: h\r\nHost: h2\r\n\r\n").await;
            assert_eq!(r.unwrap().status, 400);
        }
        drop(c);
        eventually(5, "closed", || {
            d.stats().frontend("web").unwrap().conn_cur == 0
        })
        .await;

        let v = json(&d, "/stats.json").await;
        let f = &v["frontends"][0];
        assert_eq!(f["counters"]["http_requests"], 47, "{f}");
        assert_eq!(f["counters"]["conn_total"], 1 + 10 + 3 + 2);
        assert_eq!(f["http_responses"]["2xx"], 44);
        assert_eq!(f["http_responses"]["4xx"], 5);
        assert_eq!(f["http_rejected"]["duplicate_host"], 2);
        assert_eq!(
            (f["denied"].clone(), f["request_errors"].clone()),
            (3.into(), 2.into())
        );
        assert_eq!(f["counters"]["bytes_in"], 4000, "request bodies");
        let be = &v["backends"][0];
        assert_eq!(be["counters"]["http_requests"], 44);
        assert_eq!(be["http_responses"]["2xx"], 44);
        let servers = be["servers"].as_array().unwrap();
        let picked: Vec<u64> = servers
            .iter()
            .map(|s| s["counters"]["picked"].as_u64().unwrap())
            .collect();
        assert_eq!(picked, [22, 22], "rr alternates");
        assert_eq!(a.count() + b.count(), 44, "the origins saw every request");
        let reused: u64 = servers
            .iter()
            .map(|s| s["counters"]["reused"].as_u64().unwrap())
            .sum();
        assert_eq!(reused, be["counters"]["http_reused"].as_u64().unwrap());
        // What the servers sent is what fulcrum counted (their heads are re-written,
        // so compare bodies: each origin answers its name and a newline).
        let out: u64 = servers
            .iter()
            .map(|s| s["counters"]["bytes_out"].as_u64().unwrap())
            .sum();
        assert_eq!(out, 44 * 2);
        assert!(got_out > 44 * 2);
        // The JSON is the same snapshot `Running::stats` gives.
        let st = d.stats();
        assert_eq!(st.frontend("web").unwrap().http_requests, 47);
        assert_eq!(st.backend("app").unwrap().server("a").unwrap().picked, 22);
    })
    .await;
}

#[tokio::test]
async fn rates_and_history_account_for_every_request() {
    bounded(30, async {
        let (d, _a, _b) = two().await;
        let web = d.addr("web").unwrap();
        // The first tick sets the base; what comes after it is in the history.
        let ticks = || d.shared().collector.ticks();
        eventually(5, "first tick", || ticks() >= 1).await;
        let t0 = ticks();
        let mut c = TcpStream::connect(web).await.unwrap();
        for i in 0..25 {
            let r = roundtrip(
                &mut c,
                format!("GET /{i} HTTP/1.1\r\nHost: h\r\n\r\n").as_bytes(),
            )
            .await;
            assert_eq!(r.unwrap().status, 200);
        }
        eventually(5, "a tick after the traffic", || ticks() >= t0 + 2).await;
        let v = json(&d, "/stats.json?history=300").await;
        let sum = |h: &Value| {
            h["req"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_u64().unwrap())
                .sum::<u64>()
        };
        assert_eq!(sum(&v["frontends"][0]["history"]), 25);
        assert_eq!(sum(&v["backends"][0]["history"]), 25);
        let servers = v["backends"][0]["servers"].as_array().unwrap();
        assert_eq!(servers.iter().map(|s| sum(&s["history"])).sum::<u64>(), 25);
        let max = v["frontends"][0]["rates"]["req_rate_max"].as_u64().unwrap();
        assert!((1..=25).contains(&max), "{max}");
        assert!(v["frontends"][0].get("history").is_some());
        let plain = json(&d, "/stats.json").await;
        assert!(plain["frontends"][0].get("history").is_none());
    })
    .await;
}

#[tokio::test]
async fn percentiles_match_the_origins_delay() {
    bounded(40, async {
        let slow = Origin::replying(
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
            Duration::from_millis(40),
        )
        .await;
        let d = Conf::new()
            .section("stats", "listen", "127.0.0.1:0")
            .frontend(Frontend::http("web").to("slow"))
            .backend(Backend::new("slow").server("s", slow.addr))
            .start();
        let web = d.addr("web").unwrap();
        for i in 0..20 {
            assert_eq!(get(web, &format!("/{i}"), "").await.status, 200);
        }
        let count = |d: &Running| {
            d.stats()
                .backend("slow")
                .unwrap()
                .server("s")
                .unwrap()
                .latency
                .as_ref()
                .map_or(0, |l| {
                    l.get(
                        fulcrum::stats::Window::Last10s,
                        fulcrum::stats::latency::Phase::Total,
                    )
                    .count
                })
        };
        eventually(5, "the collector read them", || count(&d) == 20).await;
        let v = json(&d, "/stats.json").await;
        let lat = &v["backends"][0]["servers"][0]["latency"]["10s"];
        for phase in ["first_byte", "total"] {
            let p = &lat[phase];
            assert_eq!(p["count"], 20);
            let p50 = p["p50_ms"].as_f64().unwrap();
            let p99 = p["p99_ms"].as_f64().unwrap();
            // The buckets are within 1.6 %; loopback adds well under 10 ms.
            assert!((40.0 * 0.984..50.0).contains(&p50), "{phase} p50 {p50}");
            assert!(p99 >= p50 && p99 < 60.0, "{phase} p99 {p99}");
        }
        assert_eq!(lat["queue"]["p99_ms"], 0.0, "nothing waited");
        assert!(lat["connect"]["p50_ms"].as_f64().unwrap() < 5.0);
        // The backend merges its servers.
        let b = &v["backends"][0]["latency"]["5m"]["total"];
        assert_eq!(b["count"], 20);
        // And the CSV's ttime is the 5-minute mean in ms.
        let csv = page(&d, "/stats.csv", "").await.text();
        let row = csv.lines().find(|l| l.starts_with("slow,s,")).unwrap();
        let i = fulcrum::stats::render::csv::COLUMNS
            .iter()
            .position(|c| *c == "ttime")
            .unwrap();
        let ttime: u64 = row.split(',').nth(i).unwrap().parse().unwrap();
        assert!((39..50).contains(&ttime), "{ttime}");
        // Its response columns: the 20 answers were 200s.
        let col = |name: &str| {
            let i = fulcrum::stats::render::csv::COLUMNS
                .iter()
                .position(|c| *c == name)
                .unwrap();
            row.split(',').nth(i).unwrap().to_string()
        };
        assert_eq!(
            (col("hrsp_2xx"), col("hrsp_5xx")),
            ("20".into(), "0".into())
        );
    })
    .await;
}

#[tokio::test]
async fn metrics_pass_promtool() {
    bounded(30, async {
        let (d, _a, _b) = two().await;
        let web = d.addr("web").unwrap();
        for i in 0..5 {
            get(web, &format!("/{i}"), "").await;
        }
        get(web, "/admin", "").await;
        eventually(5, "latency collected", || {
            d.stats().backends[0].latency.is_some()
        })
        .await;
        let r = page(&d, "/metrics", "").await;
        assert_eq!(r.status, 200);
        assert!(r.header("content-type").unwrap().starts_with("text/plain; version=0.0.4"));
        let text = r.text();
        assert!(text.contains("fulcrum_frontend_http_requests_total{frontend=\"web\"} 6\n"), "{text}");
        assert!(text.contains("fulcrum_frontend_http_responses_total{frontend=\"web\",code=\"4xx\"} 1\n"));
        assert!(text.contains("fulcrum_server_status{backend=\"app\",server=\"a\",status=\"up\"} 1\n"));
        assert!(text.contains("fulcrum_server_latency_seconds_count{backend=\"app\",server=\"a\",phase=\"total\"} 3\n"), "{text}");
        let promtool = which("promtool").expect(
            "promtool is needed for this test (Debian: apt-get install prometheus; .ci/run installs it)",
        );
        let dir = tempdir();
        let file = dir.join("metrics.txt");
        std::fs::write(&file, &text).unwrap();
        let out = std::process::Command::new(promtool)
            .args(["check", "metrics"])
            .stdin(std::fs::File::open(&file).unwrap())
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success() && said.trim().is_empty(), "promtool: {said}");
    })
    .await;
}

#[tokio::test]
async fn the_csv_reads_like_haproxys() {
    bounded(30, async {
        let (d, _a, _b) = two().await;
        get(d.addr("web").unwrap(), "/", "").await;
        for path in ["/stats.csv", "/;csv"] {
            let r = page(&d, path, "").await;
            assert_eq!(r.status, 200);
            let text = r.text();
            let mut lines = text.lines();
            let header = lines.next().unwrap();
            let names: Vec<&str> = header
                .trim_start_matches("# ")
                .trim_end_matches(',')
                .split(',')
                .collect();
            assert_eq!(names, fulcrum::stats::render::csv::COLUMNS);
            assert_eq!(names.len(), 100);
            assert_eq!(names[..5], ["pxname", "svname", "qcur", "qmax", "scur"]);
            assert_eq!(names[99], "uweight");
            let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
            let kinds: Vec<(&str, &str)> = rows.iter().map(|r| (r[0], r[1])).collect();
            assert_eq!(
                kinds,
                [
                    ("web", "FRONTEND"),
                    ("app", "a"),
                    ("app", "b"),
                    ("app", "BACKEND")
                ]
            );
            for r in &rows {
                assert_eq!(r.len(), 101, "100 fields and the trailing comma");
            }
            let col = |row: &[&str], name: &str| {
                row[names.iter().position(|n| *n == name).unwrap()].to_string()
            };
            assert_eq!(col(&rows[0], "req_tot"), "1");
            assert_eq!(col(&rows[1], "status"), "UP");
            assert_eq!(col(&rows[3], "algo"), "rr");
            assert_eq!(col(&rows[3], "lbtot"), "1");
            assert_eq!(col(&rows[1], "type"), "2");
        }
    })
    .await;
}

fn tempdir() -> TempDir {
    TempDir::new("stats")
}

fn which(tool: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| std::path::Path::new(d).join(tool))
        .find(|p| p.is_file())
}

#[tokio::test]
async fn auth_guards_every_path_and_admin_needs_the_pages_token() {
    bounded(30, async {
        let a = Origin::http("a", "").await;
        let dir = tempdir();
        std::fs::write(dir.join("stats.pass"), "s3cret\n").unwrap();
        let d = Conf::new()
            .section("stats", "listen", "127.0.0.1:0")
            .section("stats", "auth", value(r#"{ user = "ops", password_file = "stats.pass" }"#))
            .section("stats", "admin", true)
            .frontend(Frontend::web())
            .backend(Backend::app(a.addr))
            .start_as(&dir.join("fulcrum.toml"));
        for path in ["/", "/stats.json", "/metrics", "/stats.csv"] {
            let r = page(&d, path, "").await;
            assert_eq!(r.status, 401, "{path}");
            assert_eq!(r.header("www-authenticate").unwrap(), "Basic realm=\"fulcrum\"");
            let wrong = page(&d, path, "Authorization: Basic b3BzOndyb25n\r\n").await;
            assert_eq!(wrong.status, 401, "ops:wrong on {path}");
        }
        // ops:s3cret
        let auth = "Authorization: Basic b3BzOnMzY3JldA==\r\n";
        let home = page(&d, "/", auth).await;
        assert_eq!(home.status, 200);
        let text = home.text();
        let token = text.split("name=\"fulcrum-csrf\" content=\"").nth(1).unwrap()[..32].to_string();
        assert!(text.contains("const ADMIN = true;"));

        let stats_addr = d.stats_addr().unwrap();
        let post = |extra: String, body: &'static str| async move {
            let mut c = TcpStream::connect(stats_addr).await.unwrap();
            let raw = format!(
                "POST /admin HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n{extra}\r\n{body}",
                body.len()
            );
            roundtrip(&mut c, raw.as_bytes()).await.unwrap()
        };
        let form = "backend=app&server=a&action=drain";
        assert_eq!(post(String::new(), form).await.status, 401);
        assert_eq!(post(auth.to_string(), form).await.status, 403, "no token");
        let with = format!("{auth}X-Fulcrum-Csrf: {token}\r\n");
        let cross = format!("{with}Sec-Fetch-Site: cross-site\r\n");
        assert_eq!(post(cross, form).await.status, 403, "another site");
        assert_eq!(d.stats().backends[0].servers[0].admin, "ready");
        let r = post(with.clone(), form).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(d.stats().backends[0].servers[0].admin, "drain");
        let v = json_auth(&d, auth).await;
        assert_eq!(v["backends"][0]["servers"][0]["status"], "drain");
        assert_eq!(v["backends"][0]["servers"][0]["reason"], "draining (set by the operator)");
        assert_eq!(post(with.clone(), "backend=app&server=zz&action=maint").await.status, 404);
        assert_eq!(post(with.clone(), "backend=app&server=a&action=boom").await.status, 400);
        assert_eq!(post(with, "backend=app&server=a&action=ready").await.status, 200);
        assert_eq!(d.stats().backends[0].servers[0].admin, "ready");
    })
    .await;
}

async fn json_auth(d: &Running, auth: &str) -> Value {
    let r = page(d, "/stats.json", auth).await;
    serde_json::from_slice(&r.body).unwrap()
}

#[tokio::test]
async fn admin_actions_are_refused_unless_enabled() {
    bounded(30, async {
        let (d, _a, _b) = two().await;
        let home = page(&d, "/", "").await;
        let token = home.text().split("name=\"fulcrum-csrf\" content=\"").nth(1).unwrap()[..32].to_string();
        let addr: SocketAddr = d.stats_addr().unwrap();
        let mut c = TcpStream::connect(addr).await.unwrap();
        let body = "backend=app&server=a&action=maint";
        let raw = format!(
            "POST /admin HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nX-Fulcrum-Csrf: {token}\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        assert_eq!(roundtrip(&mut c, raw.as_bytes()).await.unwrap().status, 403);
        assert_eq!(d.stats().backends[0].servers[0].admin, "ready");
    })
    .await;
}

#[tokio::test]
async fn the_observability_example_serves_its_page_and_writes_its_log() {
    bounded(30, async {
        let a = Origin::http("a", "").await;
        let b = Origin::http("b", "").await;
        let dir = tempdir();
        std::fs::write(dir.join("stats.pass"), "example-password\n").unwrap();
        let text = localize_addrs("config/examples/observability.toml", &[a.addr, b.addr])
            .replace("127.0.0.1:8404", "127.0.0.1:0");
        let d = start_named(dir.join("observability.toml").to_str().unwrap(), &text);
        eventually(10, "both checked up", || {
            d.stats().backends[0]
                .servers
                .iter()
                .all(|s| s.status == "up")
        })
        .await;
        let www = d.addr("www").unwrap();
        for i in 0..6 {
            assert_eq!(get(www, &format!("/p{i}?q=1"), "").await.status, 200);
        }
        // ops:example-password
        let auth = "Authorization: Basic b3BzOmV4YW1wbGUtcGFzc3dvcmQ=\r\n";
        assert_eq!(page(&d, "/metrics", "").await.status, 401);
        let v = json_auth(&d, auth).await;
        assert_eq!(v["frontends"][0]["counters"]["http_requests"], 6);
        assert!(
            page(&d, "/", auth)
                .await
                .text()
                .contains("const ADMIN = true;")
        );
        let log = dir.join("access.log");
        let lines = || {
            std::fs::read_to_string(&log)
                .unwrap_or_default()
                .lines()
                .map(|l| serde_json::from_str::<Value>(l).unwrap())
                .collect::<Vec<_>>()
        };
        eventually(5, "six json lines", || lines().len() == 6).await;
        for l in lines() {
            assert!(l["path"].as_str().unwrap().starts_with("/p"));
            assert!(!l["path"].as_str().unwrap().contains('?'), "no query: {l}");
            assert_eq!(l["request_id"].as_str().unwrap().len(), 16);
        }
        let with_id = |o: &Origin| {
            o.heads()
                .iter()
                .filter(|h| h.contains("x-request-id: "))
                .count()
        };
        assert_eq!(with_id(&a) + with_id(&b), 6, "every request carried its id");
    })
    .await;
}

#[tokio::test]
async fn a_retry_counts_when_it_lands_on_a_kept_alive_connection() {
    bounded(30, async {
        let b = Origin::http("b", "").await;
        let dead = dead_addr().await;
        let d = Conf::new()
            .frontend(Frontend::web())
            .backend(
                Backend::new("app")
                    .set("balance", "rr")
                    .server("b", b.addr)
                    .server("dead", dead),
            )
            .start();
        let mut c = TcpStream::connect(d.addr("web").unwrap()).await.unwrap();
        // First b (its connection then kept), then dead: refused, retried on b's kept connection.
        for i in 0..2 {
            let r = roundtrip(
                &mut c,
                format!("GET /{i} HTTP/1.1\r\nHost: h\r\n\r\n").as_bytes(),
            )
            .await;
            assert_eq!(r.unwrap().status, 200);
        }
        let be = d.stats();
        let be = be.backend("app").unwrap();
        assert_eq!((be.connect_errors, be.retries, be.redispatches), (1, 1, 1));
        assert_eq!(be.server("b").unwrap().reused, 1);
        assert_eq!(be.server("dead").unwrap().retries, 1);
    })
    .await;
}

#[tokio::test]
async fn a_reload_shows_in_the_process_counters() {
    bounded(30, async {
        let (d, a, b) = two().await;
        let v = json(&d, "/stats.json").await;
        assert_eq!(
            (
                v["process"]["generation"].clone(),
                v["process"]["counters"]["reloads"].clone()
            ),
            (1.into(), 0.into())
        );
        let text = two_conf(a.addr, b.addr).text();
        let cfg = fulcrum::config::parse("test.toml", &text).unwrap();
        d.command(fulcrum::command::Command::Reload(Box::new(cfg)))
            .unwrap();
        let v = json(&d, "/stats.json").await;
        assert_eq!(v["process"]["generation"], 2);
        assert_eq!(v["process"]["counters"]["reloads"], 1);
        assert!(
            page(&d, "/metrics", "")
                .await
                .text()
                .contains("fulcrum_process_reloads_total 1\n")
        );
    })
    .await;
}
