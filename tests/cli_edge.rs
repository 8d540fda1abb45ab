//! The real binary at the edge of the operating system: file-descriptor limits,
//! signals and exit codes, one instance per address, messages.

#![allow(clippy::disallowed_methods)] // blocking tests may sleep their own thread

use fulcrum_testkit as support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use support::bin::*;
use support::{Backend, Conf, Frontend};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

const CLIENTS: usize = 1500;

/// Frontend `web` (backlog 4096) to one origin, with a long server timeout.
fn http_config(origin: SocketAddr) -> Conf {
    Conf::new()
        .frontend(Frontend::web().set("backlog", 4096))
        .backend(
            Backend::new("app")
                .timeouts([("server", "20s")])
                .server("o", origin),
        )
}

/// An HTTP origin that answers each request with 200 `ok`, on a connection per
/// request; with `barrier`, it holds every answer until that many requests are
/// in at once.
async fn origin(barrier: Option<usize>) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let waiting = Arc::new(AtomicUsize::new(0));
    let all_in = Arc::new(Notify::new());
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let (waiting, all_in) = (waiting.clone(), all_in.clone());
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                if let Some(n) = barrier {
                    let notified = all_in.notified();
                    if waiting.fetch_add(1, Ordering::SeqCst) + 1 >= n {
                        all_in.notify_waiters();
                    } else {
                        notified.await;
                    }
                }
                let _ = s
                    .write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                    )
                    .await;
            });
        }
    });
    addr
}

/// Open `n` client connections first, then send a request on each; the
/// statuses of the answers.
async fn clients(addr: SocketAddr, n: usize) -> Vec<u16> {
    let mut conns = Vec::with_capacity(n);
    for _ in 0..n {
        conns.push(TcpStream::connect(addr).await.unwrap());
    }
    let tasks: Vec<_> = conns
        .into_iter()
        .map(|mut c| {
            tokio::spawn(async move {
                c.write_all(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
                    .await
                    .ok()?;
                let mut out = Vec::new();
                c.read_to_end(&mut out).await.ok()?;
                String::from_utf8_lossy(&out)
                    .split(' ')
                    .nth(1)
                    .and_then(|s| s.parse().ok())
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.unwrap().unwrap_or(0));
    }
    statuses
}

fn multi_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// This test process holds both ends of every connection: it needs the room.
fn room_for_the_test() -> Option<u64> {
    let (_, soft, hard) = fulcrum::fdlimit::raise();
    if soft < 4 * CLIENTS as u64 {
        println!(
            "skipped: the hard file-descriptor limit ({hard:?}) is too low for {CLIENTS} clients"
        );
        return None;
    }
    hard.or(Some(fulcrum::fdlimit::CAP))
}

#[test]
fn with_1024_descriptors_the_excess_waits_instead_of_failing() {
    if room_for_the_test().is_none() {
        return;
    }
    let rt = multi_thread();
    rt.block_on(async {
        let o = origin(None).await;
        let conf = write_config("fd-1024", "web.toml", &http_config(o).text());
        let d = run_with("ulimit -n 1024 &&", &conf, 1);
        let web = d.addrs[0];
        let statuses = tokio::time::timeout(Duration::from_secs(60), clients(web, CLIENTS))
            .await
            .expect("every client answered in time");
        let ok = statuses.iter().filter(|s| **s == 200).count();
        assert_eq!(ok, CLIENTS, "statuses other than 200: {:?}", {
            let mut bad: Vec<_> = statuses.iter().filter(|s| **s != 200).collect();
            bad.dedup();
            bad
        });
        let log = d.stderr();
        assert!(
            log.contains("file descriptors: soft limit 1024 (was 1024), hard limit 1024; maxconn 345 (derived from the limit)"),
            "{log}"
        );
        assert!(!log.contains("accept failed"), "{log}");
    });
}

#[test]
fn with_a_higher_hard_limit_all_clients_are_served_at_once() {
    let Some(hard) = room_for_the_test() else {
        return;
    };
    let rt = multi_thread();
    rt.block_on(async {
        // The origin answers nobody until all of them are in: only a daemon
        // holding all the connections at once gets through.
        let o = origin(Some(CLIENTS)).await;
        let conf = write_config("fd-raise", "web.toml", &http_config(o).text());
        let d = run_with("ulimit -Sn 1024 &&", &conf, 1);
        let statuses = tokio::time::timeout(Duration::from_secs(60), clients(d.addrs[0], CLIENTS))
            .await
            .expect("every client answered in time");
        assert!(statuses.iter().all(|s| *s == 200));
        let log = d.stderr();
        assert!(
            log.contains(&format!(
                "file descriptors: soft limit {} (was 1024)",
                hard.min(fulcrum::fdlimit::CAP)
            )),
            "{log}"
        );
    });
}

/// A TCP origin in a thread that keeps every connection open without a word
/// (a connection through the daemon to it stays open until cut).
fn holding_origin() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in l.incoming().map_while(Result::ok) {
            held.push(s);
        }
    });
    addr
}

fn tcp_conf(origin: SocketAddr, listen: &str, grace: &str) -> Conf {
    Conf::new()
        .global("grace", grace)
        .frontend(Frontend::tcp("fe").to("be").set("listen", vec![listen]))
        .backend(Backend::new("be").server("o", origin))
}

fn tcp_config(origin: SocketAddr, listen: &str, grace: &str) -> String {
    tcp_conf(origin, listen, grace).text()
}

/// A TCP origin in a thread that closes each connection when the client does.
fn closing_origin() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for mut s in l.incoming().map_while(Result::ok) {
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut s, &mut std::io::sink());
            });
        }
    });
    addr
}

/// One connection through the daemon (the callers' `open=1` checks prove the
/// daemon counted it).
fn held_connection(d: &Daemon) -> std::net::TcpStream {
    std::net::TcpStream::connect(d.addrs[0]).unwrap()
}

#[test]
fn sigusr1_reopens_the_access_log() {
    let dir = test_dir("hup");
    let log = dir.join("access.log");
    let text = tcp_conf(closing_origin(), "127.0.0.1:0", "1s")
        .section("log", "access", "access.log")
        .text();
    let conf = write_config("hup", "tcp.toml", &text);
    let mut d = run_with("", &conf, 1);
    use rustix::process::Signal;
    let lines = |p: &std::path::Path| {
        std::fs::read_to_string(p)
            .unwrap_or_default()
            .lines()
            .count()
    };
    // One connection, closed by the client at once: one line when it ends.
    let one_connection =
        || drop(std::net::TcpStream::connect(d.addrs[0]).expect("still listening"));
    one_connection();
    assert!(wait(5, || lines(&log) == 1), "{}", d.stderr());
    // logrotate moves the file, then signals.
    let rotated = dir.join("access.log.1");
    std::fs::rename(&log, &rotated).unwrap();
    d.signal(Signal::USR1);
    assert!(
        d.wait_log("SIGUSR1 received: reopening the access log", 5),
        "{}",
        d.stderr()
    );
    assert!(d.wait_log("access log reopened", 5), "{}", d.stderr());
    one_connection();
    assert!(
        wait(5, || lines(&log) == 1),
        "the new file gets the new line"
    );
    assert_eq!(lines(&rotated), 1, "the old one keeps its own");
    // Still serving.
    assert!(d.child.try_wait().unwrap().is_none());
    d.signal(Signal::TERM);
    assert_eq!(d.wait_exit(10).and_then(|s| s.code()), Some(0));
}

/// A TCP origin in a thread that writes `word` to each connection and closes it.
fn greeting_origin(word: &'static str) -> SocketAddr {
    use std::io::Write;
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for mut s in l.incoming().map_while(Result::ok) {
            let _ = s.write_all(word.as_bytes());
        }
    });
    addr
}

/// What a connection to `addr` reads until the far end closes.
fn read_all(addr: SocketAddr) -> String {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

#[test]
fn sighup_reloads_the_file_and_tells_systemd() {
    let (one, two) = (greeting_origin("one"), greeting_origin("two"));
    let dir = test_dir("sighup");
    // systemd's end of NOTIFY_SOCKET.
    let notify_path = dir.join("notify");
    let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let next = || {
        let mut buf = [0u8; 256];
        let n = notify.recv(&mut buf).expect("a notification");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    let conf = write_config("sighup", "tcp.toml", &tcp_config(one, "127.0.0.1:0", "1s"));
    let mut d = run_with(
        &format!("export NOTIFY_SOCKET='{}';", notify_path.display()),
        &conf,
        1,
    );
    assert_eq!(next(), "READY=1", "ready once the listeners are bound");
    assert_eq!(read_all(d.addrs[0]), "one");

    use rustix::process::Signal;
    std::fs::write(&conf, tcp_config(two, "127.0.0.1:0", "1s")).unwrap();
    d.signal(Signal::HUP);
    let reloading = next();
    assert!(
        reloading.starts_with("RELOADING=1\nMONOTONIC_USEC="),
        "{reloading}"
    );
    assert_eq!(next(), "READY=1");
    assert!(d.wait_log("reloaded: generation 2", 5), "{}", d.stderr());
    assert_eq!(
        read_all(d.addrs[0]),
        "two",
        "the same socket, the new server"
    );

    // A broken file: named with its line, and the running config stays.
    std::fs::write(&conf, "[[frontend]]\nname = \"fe\"\nlisten = 7\n").unwrap();
    d.signal(Signal::HUP);
    assert!(
        d.wait_log("reload refused, the running configuration stays", 5),
        "{}",
        d.stderr()
    );
    assert!(d.stderr().contains("tcp.toml:3"), "{}", d.stderr());
    assert!(next().starts_with("RELOADING=1"));
    assert_eq!(
        next(),
        "READY=1",
        "a refused reload leaves the service running"
    );
    assert_eq!(read_all(d.addrs[0]), "two");
    d.signal(Signal::TERM);
    assert_eq!(d.wait_exit(10).and_then(|s| s.code()), Some(0));
    assert!(next().starts_with("STOPPING=1"));
}

/// Poll `cond` for up to `secs`.
fn wait(secs: u64, mut cond: impl FnMut() -> bool) -> bool {
    let until = std::time::Instant::now() + Duration::from_secs(secs);
    while std::time::Instant::now() < until {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

#[test]
fn a_second_stop_signal_cuts_the_grace_period_short_with_exit_code_3() {
    let conf = write_config(
        "term2",
        "tcp.toml",
        &tcp_config(holding_origin(), "127.0.0.1:0", "60s"),
    );
    let mut d = run_with("", &conf, 1);
    let _held = held_connection(&d);
    std::thread::sleep(Duration::from_millis(200));
    use rustix::process::Signal;
    d.signal(Signal::TERM);
    assert!(
        d.wait_log("open=1", 5),
        "the stopping line says how many connections are open: {}",
        d.stderr()
    );
    assert!(d.wait_exit(1).is_none(), "the grace period holds it open");
    d.signal(Signal::INT);
    let st = d.wait_exit(10).expect("a second signal stops at once");
    assert_eq!(st.code(), Some(3), "{}", d.stderr());
}

#[test]
fn connections_cut_at_the_end_of_grace_exit_with_code_3() {
    let conf = write_config(
        "grace",
        "tcp.toml",
        &tcp_config(holding_origin(), "127.0.0.1:0", "300ms"),
    );
    let mut d = run_with("", &conf, 1);
    let _held = held_connection(&d);
    std::thread::sleep(Duration::from_millis(200));
    d.signal(rustix::process::Signal::TERM);
    assert!(d.wait_log("open=1", 5), "{}", d.stderr());
    assert_eq!(
        d.wait_exit(10).and_then(|s| s.code()),
        Some(3),
        "{}",
        d.stderr()
    );
}

fn free_port() -> u16 {
    support::bin::free_port()
}

#[test]
fn a_second_instance_on_the_same_address_refuses_to_start() {
    let listen = format!("127.0.0.1:{}", free_port());
    // Two threads: per-core listeners with SO_REUSEPORT, which a second
    // process could otherwise share silently.
    let text = tcp_conf(holding_origin(), &listen, "1s")
        .global("threads", 2)
        .text();
    let conf = write_config("twice", "tcp.toml", &text);
    let first = run_with("", &conf, 1);
    let mut cmd = std::process::Command::new(bin());
    cmd.args(["run", "-c"])
        .arg(&conf)
        .env("RUST_BACKTRACE", "1");
    let Err((status, stderr)) = spawn(cmd, 1) else {
        panic!("the second instance started");
    };
    assert_eq!(status.code(), Some(1));
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("fulcrum: "))
        .collect();
    assert_eq!(
        errors,
        [format!(
            "fulcrum: frontend \"fe\": address {listen} is already in use by another process (another fulcrum on the same config?)"
        )],
        "{stderr}"
    );
    assert!(!stderr.contains("backtrace"), "{stderr}");
    // The first one was not disturbed.
    std::net::TcpStream::connect(first.addrs[0]).expect("the first instance still serves");
}

fn output(args: &[&str]) -> (Option<i32>, String, String) {
    let out = std::process::Command::new(bin())
        .args(args)
        .env("RUST_BACKTRACE", "1")
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn usage_and_file_errors_are_clear_with_their_exit_codes() {
    // No arguments: the usage, exit 2.
    let (code, out, _) = output(&[]);
    assert_eq!(code, Some(2));
    assert!(out.contains("Usage: fulcrum"), "{out}");
    assert!(out.contains("Exit codes: 0 stopped cleanly"), "{out}");
    // check without -c: says what is missing, with the usage, exit 2.
    let (code, _, err) = output(&["check"]);
    assert_eq!(code, Some(2));
    assert!(
        err.contains("--config <FILE>") && err.contains("Usage: fulcrum check"),
        "{err}"
    );
    // A file that cannot be read: the OS reason, no 0:0 position, exit 1.
    let (code, _, err) = output(&["run", "-c", "/nonexistent/fulcrum.toml"]);
    assert_eq!(code, Some(1));
    assert_eq!(
        err.lines().next(),
        Some(
            "/nonexistent/fulcrum.toml: cannot read the file: No such file or directory (os error 2)"
        )
    );
}

#[test]
fn every_option_has_help_and_the_help_is_true() {
    for sub in ["run", "check", "origin", "demo"] {
        let (code, out, _) = output(&[sub, "--help"]);
        assert_eq!(code, Some(0));
        let options = out.split("Options:").nth(1).unwrap();
        for line in options.lines().filter(|l| l.trim_start().starts_with('-')) {
            let words = line
                .split_whitespace()
                .filter(|w| !w.starts_with('-') && !w.starts_with('<'))
                .count();
            assert!(words > 0, "{sub}: an option without help: {line:?}");
        }
    }
    let (_, out, _) = output(&["demo", "--help"]);
    assert!(out.contains("four"), "{out}");
}

#[test]
fn demo_on_another_file_prints_hints_that_fit_it() {
    let origin = free_port();
    let listen = free_port();
    let text = Conf::new()
        .frontend(
            Frontend::http("site")
                .to("b")
                .set("listen", vec![format!("127.0.0.1:{listen}")]),
        )
        .backend(Backend::new("b").server("one", ([127, 0, 0, 1], origin).into()))
        .text();
    let conf = write_config("demo-other", "other.toml", &text);
    let mut cmd = std::process::Command::new(bin());
    cmd.args(["demo", "-c"]).arg(&conf);
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    use std::io::BufRead;
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        let done = line.starts_with("Ctrl-C");
        seen.push(line);
        if done {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(
        seen,
        [
            format!("origin one listening on 127.0.0.1:{origin}"),
            format!("frontend site listening on 127.0.0.1:{listen}"),
            format!("try: curl -s http://127.0.0.1:{listen}/   (frontend site)"),
            "Ctrl-C stops the demo.".to_string(),
        ]
    );
}

#[test]
fn accept_errors_are_counted_and_logged_at_most_once_a_second() {
    if room_for_the_test().is_none() {
        return;
    }
    let rt = multi_thread();
    rt.block_on(async {
        let o = origin(None).await;
        // A configured maxconn far past what 64 descriptors allow: the daemon
        // warns at start, then accept(2) fails with EMFILE under load.
        let text = http_config(o).global("maxconn", 1000).text();
        let conf = write_config("emfile", "web.toml", &text);
        let d = run_with("ulimit -n 64 &&", &conf, 1);
        assert!(
            d.wait_log("global.maxconn = 1000 needs about", 5),
            "{}",
            d.stderr()
        );
        let web = d.addrs[0];
        // Hold many connections for two seconds.
        let mut held = Vec::new();
        for _ in 0..200 {
            if let Ok(Ok(c)) =
                tokio::time::timeout(Duration::from_millis(200), TcpStream::connect(web)).await
            {
                held.push(c);
            }
        }
        tokio::time::sleep(Duration::from_millis(2500)).await;
        drop(held);
        let log = d.stderr();
        let lines: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("accept failed"))
            .collect();
        assert!(!lines.is_empty(), "{log}");
        // At most one line a second (the first at once, then about one per
        // second of the 2.5 s), each with how many failures it stands for.
        assert!(lines.len() <= 4, "{lines:#?}");
        assert!(
            lines
                .iter()
                .all(|l| l.contains("time(s) since the last report")),
            "{lines:#?}"
        );
    });
}

/// `fulcrum admin` with the given arguments (and `stdin`): exit code and stdout.
fn fulcrum_admin(args: &[&str], stdin: &str) -> (Option<i32>, String) {
    fulcrum_cmd("admin", args, stdin)
}

/// `fulcrum SUBCOMMAND` with the given arguments (and `stdin`): exit code and
/// stdout followed by stderr.
fn fulcrum_cmd(sub: &str, args: &[&str], stdin: &str) -> (Option<i32>, String) {
    use std::io::Write as _;
    let mut child = std::process::Command::new(support::bin::bin())
        .arg(sub)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code(), text)
}

#[test]
fn fulcrum_admin_drives_the_real_binary_and_changes_survive_its_restart() {
    let text = tcp_conf(closing_origin(), "127.0.0.1:0", "1s")
        .section("admin", "socket", "admin.sock")
        .text();
    let conf = write_config("admin-bin", "fulcrum.toml", &text);
    let c = conf.to_str().unwrap();
    let mut d = run_with("", &conf, 1);
    let (code, out) = fulcrum_admin(&["-c", c, "show", "info"], "");
    assert_eq!(code, Some(0), "{out}");
    assert!(out.starts_with("Name: fulcrum\n"), "{out}");
    let (code, out) = fulcrum_admin(&["-c", c, "set", "server", "be/o", "weight", "9"], "");
    assert_eq!((code, out.as_str()), (Some(0), "be/o: weight 9\n"));
    let sock = conf.with_file_name("admin.sock");
    let (code, out) = fulcrum_admin(
        &["-s", sock.to_str().unwrap(), "set server be/zz state drain"],
        "",
    );
    assert_eq!(code, Some(1), "an error answer exits 1: {out}");
    assert!(
        out.starts_with("error: backend \"be\" has no server \"zz\""),
        "{out}"
    );
    // Interactive: commands from stdin, a prompt after each answer.
    let (code, out) = fulcrum_admin(&["-c", c], "show backend\nshow config diff\n");
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("> # name\nbe\n> ~ be/o: weight 9 instead of 1\n> "),
        "{out}"
    );

    // Restarted, the weight is still 9.
    d.signal(rustix::process::Signal::TERM);
    assert_eq!(d.wait_exit(10).and_then(|s| s.code()), Some(0));
    assert!(!sock.exists(), "the socket file is removed at exit");
    let _d = run_with("", &conf, 1);
    let (_, out) = fulcrum_admin(&["-c", c, "show servers state"], "");
    assert!(out.contains(" up ready up 9/9 "), "{out}");
    // No socket configured: a clear message, exit 1.
    let plain = write_config(
        "admin-bin",
        "plain.toml",
        &tcp_config(closing_origin(), "127.0.0.1:0", "1s"),
    );
    let (code, out) = fulcrum_admin(&["-c", plain.to_str().unwrap(), "show info"], "");
    assert_eq!(code, Some(1));
    assert!(out.contains("no [admin] socket configured"), "{out}");
}

#[test]
fn fulcrum_reload_reloads_the_running_daemon_through_its_admin_socket() {
    let (one, two) = (greeting_origin("one"), greeting_origin("two"));
    let with_admin = |origin| {
        tcp_conf(origin, "127.0.0.1:0", "1s")
            .section("admin", "socket", "admin.sock")
            .text()
    };
    let v1 = with_admin(one);
    let conf = write_config("reload-bin", "fulcrum.toml", &v1);
    let c = conf.to_str().unwrap();
    let mut d = run_with("", &conf, 1);
    assert_eq!(read_all(d.addrs[0]), "one");
    std::fs::write(&conf, with_admin(two)).unwrap();
    let (code, out) = fulcrum_cmd("reload", &["-c", c], "");
    assert_eq!(code, Some(0), "{out}");
    assert!(out.starts_with("reloaded: generation 2"), "{out}");
    assert_eq!(read_all(d.addrs[0]), "two");
    // Refused: exit 1, the errors printed, the old config serving.
    std::fs::write(
        &conf,
        v1.replace("default_backend = \"be\"", "default_backend = \"nope\""),
    )
    .unwrap();
    let (code, out) = fulcrum_cmd("reload", &["-c", c], "");
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("fulcrum.toml:"), "{out}");
    assert!(out.contains("nope"), "{out}");
    assert_eq!(read_all(d.addrs[0]), "two");
    d.signal(rustix::process::Signal::TERM);
    assert_eq!(d.wait_exit(10).and_then(|s| s.code()), Some(0));
}
