//! Health checks through real sockets and real processes: servers going down
//! and up on their own (http, tcp, script, icmp), no request reaching a down
//! server, slow start, passive ejection and its cap, backups, reject and
//! fail-open, and maintenance that no check undoes.

use fulcrum_testkit as support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fulcrum::command::{AdminState, Command, Reply};
use fulcrum::daemon::Running;
use fulcrum::stats::ServerStats;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// An HTTP origin whose health can be switched: `/healthz` answers `health`
/// (0: never answers) with `body`; other paths answer 200 with the name, or
/// 500 while `failing`; `stop` closes it (connections refused), `restart`
/// opens it again on the same port.
struct Switch {
    name: &'static str,
    addr: SocketAddr,
    health: Arc<AtomicU16>,
    body: Arc<Mutex<&'static str>>,
    failing: Arc<AtomicBool>,
    hits: Arc<AtomicU64>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Switch {
    async fn start(name: &'static str) -> Switch {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let s = Switch {
            name,
            addr: l.local_addr().unwrap(),
            health: Arc::new(AtomicU16::new(200)),
            body: Arc::new(Mutex::new("ok")),
            failing: Arc::default(),
            hits: Arc::default(),
            task: Mutex::new(None),
        };
        s.serve(l);
        s
    }

    fn serve(&self, l: TcpListener) {
        let (name, health, body, failing, hits) = (
            self.name,
            self.health.clone(),
            self.body.clone(),
            self.failing.clone(),
            self.hits.clone(),
        );
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            while let Ok((s, _)) = l.accept().await {
                let (health, body, failing, hits) =
                    (health.clone(), body.clone(), failing.clone(), hits.clone());
                conns.spawn(answer(s, name, health, body, failing, hits));
            }
        });
        *self.task.lock().unwrap() = Some(task);
    }

    fn stop(&self) {
        if let Some(t) = self.task.lock().unwrap().take() {
            t.abort();
        }
    }

    async fn restart(&self) {
        let l = TcpListener::bind(self.addr).await.unwrap();
        self.serve(l);
    }

    fn hits(&self) -> u64 {
        self.hits.load(SeqCst)
    }
}

impl Drop for Switch {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn answer(
    mut s: TcpStream,
    name: &'static str,
    health: Arc<AtomicU16>,
    body: Arc<Mutex<&'static str>>,
    failing: Arc<AtomicBool>,
    hits: Arc<AtomicU64>,
) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            match s.read(&mut chunk).await {
                Ok(n) if n > 0 => buf.extend_from_slice(&chunk[..n]),
                _ => return,
            }
            continue;
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        buf.drain(..end + 4);
        let check = head.starts_with("GET /healthz ") || head.starts_with("GET /status ");
        let (status, text) = if check {
            match health.load(SeqCst) {
                0 => {
                    // Hang: keep the connection, never answer.
                    tokio::time::sleep(Duration::from_secs(60)).await;
                    return;
                }
                st => (st, body.lock().unwrap().to_string()),
            }
        } else {
            hits.fetch_add(1, SeqCst);
            if failing.load(SeqCst) {
                (500, "failing".to_string())
            } else {
                (200, name.to_string())
            }
        };
        let out = format!(
            "HTTP/1.1 {status} X\r\ncontent-length: {}\r\n\r\n{text}",
            text.len()
        );
        if s.write_all(out.as_bytes()).await.is_err() {
            return;
        }
    }
}

/// A listener that never accepts and whose queue is full: SYNs to it are
/// dropped, as a powered-off host's are.
fn syn_dropper() -> (SocketAddr, Vec<std::net::TcpStream>, socket2::Socket) {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    s.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .unwrap();
    s.listen(0).unwrap();
    let addr = s.local_addr().unwrap().as_socket().unwrap();
    // Fill the accept queue; connects beyond it hang.
    let mut held = Vec::new();
    for _ in 0..4 {
        if let Ok(c) = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            held.push(c);
        }
    }
    (addr, held, s)
}

fn servers(d: &Running, backend: &str) -> HashMap<String, ServerStats> {
    match d.command(Command::ShowServers {
        backend: Some(backend.into()),
    }) {
        Ok(Reply::Servers(list)) => list.into_iter().map(|(_, s)| (s.name.clone(), s)).collect(),
        other => panic!("{other:?}"),
    }
}

async fn wait_status(d: &Running, backend: &str, server: &str, status: &str) {
    eventually(10, &format!("{backend}/{server} {status}"), || {
        servers(d, backend)[server].status == status
    })
    .await;
}

/// Backend `app` (rr, two retries) with an HTTP check every 100 ms, rise
/// and fall 2, and no servers yet.
fn checked() -> Backend {
    Backend::new("app")
        .set("balance", "rr")
        .set("retries", 2)
        .timeouts([("connect", "2s")])
        .set(
            "health",
            value(
                r#"{ check = "http", path = "/healthz", expect_body = "ok", interval = "100ms", timeout = "80ms", rise = 2, fall = 2 }"#,
            ),
        )
}

fn web(app: Backend) -> Running {
    Conf::new().frontend(Frontend::web()).backend(app).start()
}

async fn two() -> (Running, Switch, Switch) {
    let (a, b) = (Switch::start("a").await, Switch::start("b").await);
    let d = web(checked().server("a", a.addr).server("b", b.addr));
    wait_status(&d, "app", "a", "up").await;
    wait_status(&d, "app", "b", "up").await;
    (d, a, b)
}

async fn names(d: &Running, n: usize) -> Vec<String> {
    let mut v = Vec::new();
    for _ in 0..n {
        v.push(get(d.addr("web").unwrap(), "/x", "").await.text());
    }
    v
}

#[tokio::test]
async fn http_checks_take_a_server_down_and_bring_it_back() {
    bounded(30, async {
        let (d, a, _b) = two().await;
        // Status mismatch.
        a.health.store(503, SeqCst);
        wait_status(&d, "app", "a", "down").await;
        let s = &servers(&d, "app")["a"];
        assert_eq!((s.health.as_str(), s.went_down), ("down", 1));
        assert!(
            s.checks_failed >= 2 && s.last_check == "http status 503",
            "{s:?}"
        );
        // Once down, no request reaches it.
        let before = a.hits();
        assert!(names(&d, 10).await.iter().all(|n| n == "b"));
        assert_eq!(a.hits(), before);
        a.health.store(200, SeqCst);
        wait_status(&d, "app", "a", "up").await;
        // Body mismatch.
        *a.body.lock().unwrap() = "starting";
        wait_status(&d, "app", "a", "down").await;
        assert_eq!(servers(&d, "app")["a"].last_check, "body without \"ok\"");
        *a.body.lock().unwrap() = "ok";
        wait_status(&d, "app", "a", "up").await;
        // A hung server: the check times out.
        a.health.store(0, SeqCst);
        wait_status(&d, "app", "a", "down").await;
        assert_eq!(servers(&d, "app")["a"].last_check, "timeout after 80ms");
        a.health.store(200, SeqCst);
        wait_status(&d, "app", "a", "up").await;
        // Maintenance: passing checks never bring it back.
        set_state(&d, "app", "a", AdminState::Maint);
        // Three passing checks (rise is 2) after it went into maintenance.
        let checks = |d: &Running| servers(d, "app")["a"].base.checks;
        let seen = checks(&d);
        eventually(10, "three more checks", || checks(&d) >= seen + 3).await;
        let s = &servers(&d, "app")["a"];
        assert_eq!((s.status.as_str(), s.health.as_str()), ("maint", "up"));
        set_state(&d, "app", "a", AdminState::Ready);
        assert_eq!(servers(&d, "app")["a"].status, "up");
    })
    .await;
}

#[tokio::test]
async fn zero_failures_while_one_of_three_servers_is_killed_and_restarted() {
    bounded(30, async {
        let (a, b, c) = (
            Switch::start("a").await,
            Switch::start("b").await,
            Switch::start("c").await,
        );
        let d = web(checked()
            .server("a", a.addr)
            .server("b", b.addr)
            .server("c", c.addr));
        for s in ["a", "b", "c"] {
            wait_status(&d, "app", s, "up").await;
        }
        let web = d.addr("web").unwrap();
        let (mut ok, mut failed) = (0, 0);
        for i in 0..150 {
            if i == 30 {
                b.stop();
            }
            if i == 90 {
                b.restart().await;
            }
            let r = get(web, "/x", "").await;
            if r.status == 200 {
                ok += 1
            } else {
                failed += 1
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!((ok, failed), (150, 0));
        assert_eq!(servers(&d, "app")["b"].went_down, 1, "b was seen down");
        wait_status(&d, "app", "b", "up").await;
        let before = b.hits();
        names(&d, 6).await;
        assert!(b.hits() > before, "b takes traffic again");
        assert!(a.hits() > 0 && c.hits() > 0);
    })
    .await;
}

#[tokio::test]
async fn tcp_checks_send_and_expect() {
    bounded(20, async {
        let echo = Origin::start("e", Behaviour::Echo).await;
        let silent = Origin::start("r", Behaviour::Record).await;
        let d = Conf::new()
            .frontend(Frontend::tcp("db").to("pg"))
            .backend(
                Backend::new("pg")
                    .set(
                        "health",
                        value(
                            r#"{ check = "tcp", send = "PING\r\n", expect = "PING", interval = "100ms", timeout = "80ms", rise = 1, fall = 1 }"#,
                        ),
                    )
                    .server("echo", echo.addr)
                    .server("silent", silent.addr),
            )
            .start();
        wait_status(&d, "pg", "echo", "up").await;
        eventually(10, "the silent one fails on its reply", || {
            servers(&d, "pg")["silent"].last_check == "timeout after 80ms"
        })
        .await;
        assert_eq!(servers(&d, "pg")["silent"].status, "down");
        let s = &servers(&d, "pg")["echo"];
        assert!(s.checks >= 1 && s.check_age_ms < 5_000 && s.down_total_ms < 5_000, "{s:?}");
    })
    .await;
}

#[tokio::test]
async fn a_server_that_drops_syns_costs_requests_nothing() {
    bounded(30, async {
        let a = Switch::start("a").await;
        let (dead, _held, _sock) = syn_dropper();
        let tcp = r#"{ check = "tcp", interval = "100ms", timeout = "80ms", rise = 2, fall = 2 }"#;
        let d = web(checked()
            .set("health", value(tcp))
            .server("a", a.addr)
            .server("b", dead));
        wait_status(&d, "app", "a", "up").await;
        eventually(10, "b's check timed out", || {
            servers(&d, "app")["b"].last_check == "timeout after 80ms"
        })
        .await;
        assert_eq!(servers(&d, "app")["b"].status, "down");
        let t0 = Instant::now();
        assert!(names(&d, 20).await.iter().all(|n| n == "a"));
        assert!(
            t0.elapsed() < Duration::from_secs(2),
            "no request waited for the dead server's connect timeout: {:?}",
            t0.elapsed()
        );
        assert_eq!(d.stats().backend("app").unwrap().connect_errors, 0);
    })
    .await;
}

fn script(dir: &std::path::Path, name: &str, body: &str) -> String {
    use std::os::unix::fs::PermissionsExt;
    let p = dir.join(name);
    std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p.display().to_string()
}

#[tokio::test]
async fn script_checks_exit_codes_dynamic_weight_and_timeout() {
    bounded(30, async {
        let tmp = TempDir::new("health-script");
        let dir = tmp.0.clone();
        let code = dir.join("code");
        std::fs::write(&code, "0").unwrap();
        let check = script(
            &dir,
            "check.sh",
            &format!("c=$(cat {}); echo \"$FULCRUM_BACKEND/$FULCRUM_SERVER_NAME at $FULCRUM_SERVER_PORT says $c\"; exit $c", code.display()),
        );
        let pids = dir.join("pids");
        let slow = script(
            &dir,
            "slow.sh",
            &format!("sleep 30 & echo $$ $! > {}; wait", pids.display()),
        );
        let a = Switch::start("a").await;
        let mut health = table([
            ("check", "script"),
            ("interval", "100ms"),
            ("timeout", "90ms"),
        ]);
        health.extend(table([("rise", 1), ("fall", 1)]));
        health.insert("dynamic_weight".into(), true.into());
        health.insert("command".into(), vec![check].into());
        let mut own = table([("timeout", "300ms"), ("interval", "1s")]);
        own.insert("command".into(), vec![slow].into());
        let d = web(
            Backend::new("app")
                .set("health", health)
                .server_with("a", a.addr, table([("weight", 10)]))
                .server_with("slow", a.addr, table([("health", own)])),
        );
        wait_status(&d, "app", "a", "up").await;
        let port = a.addr.port();
        assert_eq!(servers(&d, "app")["a"].last_check, format!("ok: app/a at {port} says 0"));
        std::fs::write(&code, "1").unwrap();
        wait_status(&d, "app", "a", "down").await;
        assert_eq!(servers(&d, "app")["a"].last_check, format!("script exit 1: app/a at {port} says 1"));
        // 2..=255 with dynamic_weight: healthy, weight = code - 2.
        std::fs::write(&code, "5").unwrap();
        wait_status(&d, "app", "a", "up").await;
        eventually(5, "weight 3", || servers(&d, "app")["a"].weight == 3).await;
        // A script past its timeout is killed with its whole process group,
        // and reaped.
        eventually(10, "the slow script timed out", || {
            servers(&d, "app")["slow"].last_check.starts_with("script timeout after 300ms")
        })
        .await;
        let text = std::fs::read_to_string(&pids).unwrap();
        let mut it = text.split_whitespace().map(|p| p.parse::<u32>().unwrap());
        let (sh, sleeper) = (it.next().unwrap(), it.next().unwrap());
        eventually(5, "the script and its child are gone", || {
            [sh, sleeper].iter().all(|p| {
                std::fs::read_to_string(format!("/proc/{p}/stat"))
                    .map_or(true, |s| s.split(' ').nth(2) != Some("S") && s.split(' ').nth(2) != Some("R"))
            })
        })
        .await;
        assert!(
            std::fs::metadata(format!("/proc/{sh}")).is_err(),
            "the script, our child, was reaped (no zombie)"
        );
    })
    .await;
}

#[tokio::test]
async fn icmp_checks_ping_the_server() {
    if let Err(why) = fulcrum::health::icmp::available() {
        println!("skipped: {why}");
        return;
    }
    bounded(20, async {
        let a = Switch::start("a").await;
        let d = web(Backend::app(a.addr).set(
            "health",
            value(r#"{ check = "icmp", interval = "100ms", timeout = "90ms" }"#),
        ));
        wait_status(&d, "app", "a", "up").await;
        assert_eq!(servers(&d, "app")["a"].last_check, "ok");
    })
    .await;
}

#[tokio::test]
async fn slow_start_ramps_a_returning_server() {
    bounded(30, async {
        let (a, b) = (Switch::start("a").await, Switch::start("b").await);
        let d = web(checked()
            .set("balance", "wrr")
            .set("slowstart", "3s")
            .server_with("a", a.addr, table([("weight", 20)]))
            .server_with("b", b.addr, table([("weight", 20)])));
        wait_status(&d, "app", "b", "up").await;
        b.health.store(503, SeqCst);
        wait_status(&d, "app", "b", "down").await;
        b.health.store(200, SeqCst);
        wait_status(&d, "app", "b", "up").await;
        assert_eq!(
            servers(&d, "app")["a"].weight,
            20,
            "no slow start at the first check"
        );
        let early = names(&d, 40).await.iter().filter(|n| *n == "b").count();
        eventually(10, "b at full weight", || {
            servers(&d, "app")["b"].weight == 20
        })
        .await;
        let late = names(&d, 40).await.iter().filter(|n| *n == "b").count();
        assert!(
            early <= 12,
            "right after coming back b gets little: {early} of 40"
        );
        assert!(
            (18..=22).contains(&late),
            "at full weight, half: {late} of 40"
        );
    })
    .await;
}

#[tokio::test]
async fn passive_ejection_takes_a_failing_server_out_for_a_while_and_is_capped() {
    bounded(30, async {
        let (a, b) = (Switch::start("a").await, Switch::start("b").await);
        let eject = value(r#"{ consecutive_5xx = 3, base_time = "600ms", max_percent = 50 }"#);
        let d = web(Backend::new("app")
            .set("eject", eject)
            .server("a", a.addr)
            .server("b", b.addr));
        a.failing.store(true, SeqCst);
        let seen = names(&d, 6).await;
        assert_eq!(
            seen.iter().filter(|n| *n == "failing").count(),
            3,
            "{seen:?}"
        );
        let s = &servers(&d, "app")["a"];
        assert!(s.ejected && s.status == "down" && s.ejections == 1, "{s:?}");
        assert!(names(&d, 6).await.iter().all(|n| n == "b"));
        // Back after base_time.
        a.failing.store(false, SeqCst);
        wait_status(&d, "app", "a", "up").await;
        assert!(!servers(&d, "app")["a"].ejected);
        // Both failing: at most half of them (one) is ejected at a time.
        a.failing.store(true, SeqCst);
        b.failing.store(true, SeqCst);
        names(&d, 20).await;
        let all = servers(&d, "app");
        assert_eq!(all.values().filter(|s| s.ejected).count(), 1);
        assert!(d.stats().backend("app").unwrap().eject_skipped >= 1);
    })
    .await;
}

#[tokio::test]
async fn backups_take_over_when_the_primaries_are_down_or_dead() {
    bounded(30, async {
        let (a, spare) = (Switch::start("a").await, Switch::start("spare").await);
        let d = web(checked().server("a", a.addr).server_with(
            "spare",
            spare.addr,
            table([("backup", true)]),
        ));
        wait_status(&d, "app", "a", "up").await;
        assert!(names(&d, 4).await.iter().all(|n| n == "a"));
        a.health.store(503, SeqCst);
        wait_status(&d, "app", "a", "down").await;
        assert!(names(&d, 4).await.iter().all(|n| n == "spare"));

        // Without checks: connects to both dead primaries fail, then the backup.
        let d = web(Backend::new("app")
            .set("retries", 3)
            .server("p1", dead_addr().await)
            .server("p2", dead_addr().await)
            .server_with("spare", spare.addr, table([("backup", true)])));
        assert_eq!(names(&d, 3).await, ["spare", "spare", "spare"]);
    })
    .await;
}

#[tokio::test]
async fn all_down_rejects_at_once_or_fails_open() {
    bounded(30, async {
        let a = Switch::start("a").await;
        let (dead, _held, _sock) = syn_dropper();
        let d = web(checked().server("a", a.addr).server("b", dead));
        wait_status(&d, "app", "a", "up").await;
        wait_status(&d, "app", "b", "down").await;
        a.health.store(503, SeqCst);
        wait_status(&d, "app", "a", "down").await;
        let t0 = Instant::now();
        let r = get(d.addr("web").unwrap(), "/x", "").await;
        assert_eq!(r.status, 503);
        assert!(
            t0.elapsed() < Duration::from_millis(300),
            "{:?}",
            t0.elapsed()
        );
        assert_eq!(
            d.stats().backend("app").unwrap().connect_errors,
            0,
            "no connect attempt"
        );

        // fail_open: every check fails, traffic flows anyway.
        let b = Switch::start("b").await;
        b.health.store(503, SeqCst);
        let d = web(checked()
            .set("on_all_down", "fail_open")
            .server("a", a.addr)
            .server("b", b.addr));
        eventually(10, "failing open", || {
            let s = servers(&d, "app");
            s.values().all(|s| s.fail_open && s.health == "down")
        })
        .await;
        let seen = names(&d, 4).await;
        assert_eq!(seen.iter().filter(|n| *n == "a").count(), 2, "{seen:?}");
        assert_eq!(d.stats().backend("app").unwrap().fail_opens, 1);
        // One server back: fail-open ends, only it takes traffic.
        b.health.store(200, SeqCst);
        wait_status(&d, "app", "b", "up").await;
        eventually(5, "fail-open over", || !servers(&d, "app")["a"].fail_open).await;
        assert!(names(&d, 4).await.iter().all(|n| n == "b"));
    })
    .await;
}

#[tokio::test]
async fn the_health_example_checks_http_and_tcp_servers() {
    bounded(30, async {
        let (a, b, spare) = (
            Switch::start("a").await,
            Switch::start("b").await,
            Switch::start("spare").await,
        );
        let (pg1, pg2) = (Switch::start("pg1").await, Switch::start("pg2").await);
        let addrs = [a.addr, b.addr, spare.addr, pg1.addr, pg2.addr];
        let text = localize_addrs("config/examples/health.toml", &addrs)
            .replace("interval = \"2s\"", "interval = \"100ms\"")
            .replace("fastinter = \"500ms\"", "fastinter = \"100ms\"")
            .replace("downinter = \"5s\"", "downinter = \"100ms\"")
            .replace("timeout = \"1s\"", "timeout = \"80ms\"")
            .replace("interval = \"1s\"", "interval = \"100ms\"");
        let d = start(&text, &[]);
        wait_status(&d, "app", "a", "up").await;
        wait_status(&d, "app", "b", "up").await;
        wait_status(&d, "pg", "pg1", "up").await;
        assert_eq!(servers(&d, "app")["spare"].last_check, "", "never checked");
        a.health.store(500, SeqCst);
        wait_status(&d, "app", "a", "down").await;
        // b checks its own path.
        assert_eq!(servers(&d, "app")["b"].health, "up");
        // The tcp check: pg1 stops answering connects.
        pg1.stop();
        wait_status(&d, "pg", "pg1", "down").await;
        for _ in 0..3 {
            let mut c = TcpStream::connect(d.addr("db").unwrap()).await.unwrap();
            let r = roundtrip(&mut c, b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n")
                .await
                .unwrap();
            assert_eq!(r.text(), "pg2");
        }
        assert!(pg2.hits() >= 3);
    })
    .await;
}

/// A server added at runtime counts its time down from when it was added,
/// not from when the process started (HAProxy's `downtime`).
#[tokio::test]
async fn a_server_added_later_counts_its_downtime_from_its_addition() {
    bounded(20, async {
        let (a, b) = (Switch::start("a").await, Switch::start("b").await);
        let d = web(checked().server("a", a.addr));
        wait_status(&d, "app", "a", "up").await;
        // The daemon (and the process's clock) well before the addition.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let added = Instant::now();
        d.command(Command::AddServer(fulcrum::command::NewServer {
            backend: "app".into(),
            server: "b".into(),
            addr: b.addr,
            weight: 1,
            backup: false,
            check: true,
        }))
        .unwrap();
        wait_status(&d, "app", "b", "up").await;
        let s = &servers(&d, "app")["b"];
        let since = added.elapsed().as_millis() as u64;
        // (+1: both sides are whole milliseconds.)
        assert!(s.down_total_ms <= since + 1, "{s:?}: added {since} ms ago");
    })
    .await;
}
