//! Driving the real binary: a child process killed on drop, its listeners read
//! from stdout, its stderr kept for assertions, configs in a per-test folder.

#![allow(clippy::disallowed_methods)] // blocking helpers may sleep their own thread

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The `fulcrum` binary cargo built for the integration tests: beside the
/// test's own executable's `deps/` folder (what `CARGO_BIN_EXE_fulcrum`
/// names, which only the package's own tests can read at compile time).
pub fn bin() -> &'static str {
    static PATH: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        let exe = std::env::current_exe().expect("the test's own path");
        let dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("target/<profile>");
        dir.join("fulcrum").to_string_lossy().into_owned()
    });
    &PATH
}

/// A daemon (or any child) killed on drop, so no test leaves one behind.
pub struct Daemon {
    pub child: Child,
    /// Everything it wrote to stderr so far.
    pub stderr: Arc<Mutex<String>>,
    /// The addresses from its `frontend NAME listening on ADDR` lines.
    pub addrs: Vec<SocketAddr>,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port free now, for a test that must name its port before the daemon
/// binds it. Chosen below the kernel's ephemeral range (32768 and up), so a
/// client socket of another test cannot take it in between.
pub fn free_port() -> u16 {
    let seed = std::process::id() as u64
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
    let mut x = seed | 1;
    loop {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let port = 20_000 + (x % 12_000) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// A folder for one test's files. The folders of earlier runs of the same
/// test whose process is gone are removed first (the daemon tests write
/// configs and logs there and cannot tell when the last user is done), so
/// they never pile up.
pub fn test_dir(name: &str) -> PathBuf {
    let tmp = std::env::temp_dir();
    let prefix = format!("fulcrum-{name}-");
    if let Ok(entries) = std::fs::read_dir(&tmp) {
        for e in entries.flatten() {
            let file = e.file_name();
            let Some(pid) = file.to_str().and_then(|f| f.strip_prefix(&prefix)) else {
                continue;
            };
            if pid.parse::<u32>().is_ok() && !Path::new("/proc").join(pid).exists() {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    let dir = tmp.join(format!("{prefix}{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Write `text` as `name` in the test's folder.
pub fn write_config(test: &str, name: &str, text: &str) -> PathBuf {
    let p = test_dir(test).join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// Spawn `cmd` (stdout and stderr piped) and wait for `want` listening lines.
/// `None` if it exited before printing them (its stderr says why).
pub fn spawn(mut cmd: Command, want: usize) -> Result<Daemon, (ExitStatus, String)> {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = Arc::new(Mutex::new(String::new()));
    let err = child.stderr.take().unwrap();
    let sink = stderr.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            let mut s = sink.lock().unwrap();
            s.push_str(&line);
            s.push('\n');
        }
    });
    let out = child.stdout.take().unwrap();
    let mut lines = BufReader::new(out).lines();
    let mut addrs = Vec::new();
    while addrs.len() < want {
        match lines.next() {
            Some(Ok(line)) => {
                if let Some(a) = line
                    .strip_prefix("frontend ")
                    .and_then(|l| l.split(" listening on ").nth(1))
                {
                    addrs.push(a.parse().unwrap());
                }
            }
            _ => {
                let status = child.wait().unwrap();
                // Let the stderr thread finish reading.
                std::thread::sleep(Duration::from_millis(50));
                let text = stderr.lock().unwrap().clone();
                return Err((status, text));
            }
        }
    }
    // Keep draining stdout so the child never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Ok(Daemon {
        child,
        stderr,
        addrs,
    })
}

/// `fulcrum run -c FILE` under `sh -c "<limits>; exec ..."` (e.g. `ulimit -Sn 1024`).
pub fn run_with(shell_prefix: &str, conf: &std::path::Path, want: usize) -> Daemon {
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(format!("{shell_prefix} exec \"$0\" run -c \"$1\""))
        .arg(bin())
        .arg(conf);
    spawn(cmd, want).unwrap_or_else(|(st, err)| panic!("daemon exited {st:?}: {err}"))
}

impl Daemon {
    /// Wait up to `secs` for the child to exit.
    pub fn wait_exit(&mut self, secs: u64) -> Option<ExitStatus> {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < deadline {
            if let Some(st) = self.child.try_wait().unwrap() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Send `sig` to the child.
    pub fn signal(&self, sig: rustix::process::Signal) {
        let pid = rustix::process::Pid::from_raw(self.child.id() as i32).unwrap();
        rustix::process::kill_process(pid, sig).unwrap();
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Wait until stderr contains `what`.
    pub fn wait_log(&self, what: &str, secs: u64) -> bool {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < deadline {
            if self.stderr().contains(what) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }
}
