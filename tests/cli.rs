//! The real binary: `check` on every shipped config and on the bad ones (exact
//! output), SIGTERM with a transfer in flight, and the demo.

#![allow(clippy::disallowed_methods)] // a blocking test may sleep its own thread

use fulcrum_testkit as support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_fulcrum");

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn configs(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            if p.file_name().unwrap() != "bad" {
                configs(&p, out);
            }
        } else if p.extension().is_some_and(|x| x == "toml") {
            out.push(p);
        }
    }
}

#[test]
fn check_accepts_every_shipped_config() {
    let mut files = Vec::new();
    configs(&root().join("config"), &mut files);
    assert!(files.len() >= 3, "{files:?}");
    for f in files {
        let rel = f.strip_prefix(root()).unwrap();
        // Its certificate files are made at test time (tests/tls.rs checks
        // and drives it): none is shipped, so none can expire in the tree.
        if rel.ends_with("examples/tls.toml") {
            continue;
        }
        let out = Command::new(BIN)
            .args(["check", "-c"])
            .arg(rel)
            .current_dir(root())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{}: {}",
            rel.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            stdout.starts_with(&format!("{}: ok: ", rel.display())),
            "{stdout}"
        );
    }
}

/// Run `fulcrum check` on every `.toml` in `config/{dir}`: each exits with
/// `code` and prints on stderr exactly its `.expected` file. How many were run.
fn check_every_file_in(dir: &str, code: i32) -> usize {
    let mut n = 0;
    for e in std::fs::read_dir(root().join("config").join(dir)).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_none_or(|x| x != "toml") {
            continue;
        }
        n += 1;
        let rel = p.strip_prefix(root()).unwrap();
        let out = Command::new(BIN)
            .args(["check", "-c"])
            .arg(rel)
            .current_dir(root())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(code), "{}", rel.display());
        let want = std::fs::read_to_string(p.with_extension("expected")).unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stderr),
            want,
            "{}",
            rel.display()
        );
    }
    n
}

#[test]
fn check_prints_warnings_with_their_position_and_accepts_the_file() {
    assert!(check_every_file_in("warn", 0) >= 1);
}

#[test]
fn check_reports_every_error_with_its_position() {
    assert!(check_every_file_in("bad", 1) >= 4);
}

/// A child process killed on drop, so no test leaves one behind.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Read stdout lines until every `frontend NAME listening on ADDR` line we need.
fn listening(child: &mut Child, want: usize) -> Vec<SocketAddr> {
    let out = child.stdout.take().unwrap();
    let mut lines = BufReader::new(out).lines();
    let mut addrs = Vec::new();
    while addrs.len() < want {
        let line = lines.next().expect("daemon printed its listeners").unwrap();
        if let Some(a) = line
            .strip_prefix("frontend ")
            .and_then(|l| l.split(" listening on ").nth(1))
        {
            addrs.push(a.parse().unwrap());
        }
    }
    // Keep draining stdout so the child never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    addrs
}

fn free_port() -> u16 {
    support::bin::free_port()
}

#[test]
fn sigterm_lets_a_transfer_in_flight_finish_then_exits_zero() {
    // An origin in a thread: read to EOF, answer the byte count.
    let origin = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let oaddr = origin.local_addr().unwrap();
    let (accepted_tx, accepted) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        if let Ok((mut s, _)) = origin.accept() {
            let _ = accepted_tx.send(());
            let mut n = 0usize;
            let mut buf = [0u8; 65536];
            while let Ok(k) = s.read(&mut buf) {
                if k == 0 {
                    break;
                }
                n += k;
            }
            let _ = s.write_all(format!("got {n}\n").as_bytes());
        }
    });
    let dir = support::bin::test_dir("cli");
    let conf = dir.join("term.toml");
    std::fs::write(
        &conf,
        support::Conf::new()
            .global("grace", "10s")
            .frontend(support::Frontend::tcp("fe").to("be"))
            .backend(support::Backend::new("be").server("o", oaddr))
            .text(),
    )
    .unwrap();
    let mut child = Proc(
        Command::new(BIN)
            .args(["run", "-c"])
            .arg(&conf)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let fe = listening(&mut child.0, 1)[0];
    let mut c = TcpStream::connect(fe).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let chunk = vec![7u8; 1 << 20];
    c.write_all(&chunk).unwrap();
    accepted.recv_timeout(Duration::from_secs(5)).unwrap();
    let pid = rustix::process::Pid::from_raw(child.0.id() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    // The listener goes away, the connection in flight does not.
    let deadline = Instant::now() + Duration::from_secs(5);
    while TcpStream::connect(fe).is_ok() {
        assert!(
            Instant::now() < deadline,
            "listener still open after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    for _ in 0..3 {
        c.write_all(&chunk).unwrap();
    }
    c.shutdown(std::net::Shutdown::Write).unwrap();
    let mut reply = String::new();
    c.read_to_string(&mut reply).unwrap();
    assert_eq!(reply, format!("got {}\n", 4 << 20));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            assert!(status.success(), "{status:?}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "daemon did not exit after draining"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn demo_routes_api_canary_and_beta() {
    let ports: Vec<u16> = (0..5).map(|_| free_port()).collect();
    let mut text = std::fs::read_to_string(root().join("config/demo.toml"))
        .unwrap()
        .replace("127.0.0.1:8080", &format!("127.0.0.1:{}", ports[0]));
    for (i, p) in ports[1..].iter().enumerate() {
        text = text.replace(
            &format!("127.0.0.1:900{}", i + 1),
            &format!("127.0.0.1:{p}"),
        );
    }
    let dir = support::bin::test_dir("demo");
    let conf = dir.join("demo.toml");
    std::fs::write(&conf, text).unwrap();
    let mut child = Proc(
        Command::new(BIN)
            .args(["demo", "-c"])
            .arg(&conf)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let fe = listening(&mut child.0, 1)[0];
    let ask = |path: &str, extra: &str| {
        let mut c = TcpStream::connect(fe).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        c.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: demo\r\n{extra}Connection: close\r\n\r\n")
                .as_bytes(),
        )
        .unwrap();
        let mut resp = String::new();
        c.read_to_string(&mut resp).unwrap();
        assert!(resp.starts_with("HTTP/1.1 200 OK\r\n"), "{resp}");
        assert!(resp.contains("\r\nx-routed-by: fulcrum\r\n"), "{resp}");
        let body = resp.split("\r\n\r\n").nth(1).unwrap();
        let (name, rest) = body.split_once(' ').unwrap();
        assert_eq!(rest, format!("GET {path}\n"));
        name.to_string()
    };
    for _ in 0..3 {
        assert_eq!(ask("/api/users", ""), "api");
        assert_eq!(ask("/hello", "Cookie: group=beta\r\n"), "v2");
    }
    let mut count = std::collections::BTreeMap::new();
    for _ in 0..200 {
        *count.entry(ask("/hello", "")).or_insert(0) += 1;
    }
    let v2 = count.get("v2").copied().unwrap_or(0);
    assert!((35..=85).contains(&v2), "30 % canary: {count:?}");
    assert!(count.get("a").copied().unwrap_or(0) > 50, "{count:?}");
    assert!(count.get("b").copied().unwrap_or(0) > 50, "{count:?}");
    assert!(!count.contains_key("api"), "{count:?}");
}
