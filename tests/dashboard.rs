//! The dashboard in a real browser: headless Chromium loads the page, its
//! script runs and draws every server; a server whose origin stops turns
//! DOWN on the page with its reason. A screenshot is kept under
//! `target/tmp/dashboard.png`.

use fulcrum_testkit as support;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

fn chromium() -> PathBuf {
    for name in ["chromium", "chromium-browser", "google-chrome"] {
        if let Some(p) = std::env::var_os("PATH").and_then(|path| {
            std::env::split_paths(&path)
                .map(|d| d.join(name))
                .find(|p| p.is_file())
        }) {
            return p;
        }
    }
    panic!("this test needs Chromium (Debian: apt-get install chromium; .ci/run installs it)");
}

/// Run headless Chromium on `url` (its timers given 3 s of virtual time, so
/// the page's first polls complete) with `args`; its stdout.
async fn browse(url: &str, args: &[&str]) -> String {
    let profile = std::env::temp_dir().join(format!(
        "fulcrum-chromium-{}-{}",
        std::process::id(),
        fulcrum::net::rand::fastrand_u64()
    ));
    let out = tokio::process::Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("--virtual-time-budget=3000")
        .args(args)
        .arg(url)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), out)
        .await
        .expect("chromium finished within 60 s")
        .expect("chromium runs");
    let _ = std::fs::remove_dir_all(&profile);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// An HTTP origin that can be stopped (its port then refuses connections).
async fn stoppable(name: &'static str) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut conns = tokio::task::JoinSet::new();
        while let Ok((mut s, _)) = l.accept().await {
            conns.spawn(async move {
                let mut buf = [0u8; 4096];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 {
                        return;
                    }
                    let body = format!("{name}\n");
                    let r = format!(
                        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    if s.write_all(r.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, task)
}

#[tokio::test]
async fn the_dashboard_shows_every_server_and_one_going_down() {
    bounded(120, async {
        let (a, _keep) = stoppable("a").await;
        let (b, b_task) = stoppable("b").await;
        let d = Conf::new()
            .section("stats", "listen", "127.0.0.1:0")
            .frontend(Frontend::web())
            .backend(
                Backend::new("app")
                    .set(
                        "health",
                        value(r#"{ check = "tcp", interval = "200ms", rise = 1, fall = 1 }"#),
                    )
                    .server("alpha", a)
                    .server("beta", b),
            )
            .start();
        let status = |name: &str| {
            d.stats()
                .backend("app")
                .unwrap()
                .server(name)
                .unwrap()
                .status
                .clone()
        };
        eventually(5, "both up", || {
            status("alpha") == "up" && status("beta") == "up"
        })
        .await;
        for i in 0..20 {
            assert_eq!(
                get(d.addr("web").unwrap(), &format!("/{i}"), "")
                    .await
                    .status,
                200
            );
        }
        let url = format!("http://{}/", d.stats_addr().unwrap());
        let dom = browse(&url, &["--dump-dom"]).await;
        assert!(
            dom.contains(r#"data-server="alpha" data-status="up""#),
            "{dom}"
        );
        assert!(
            dom.contains(r#"data-server="beta" data-status="up""#),
            "{dom}"
        );
        assert!(
            dom.contains("live ·"),
            "the page's script got an answer: {dom}"
        );
        assert!(dom.contains(r#"<section data-backend="app">"#));

        b_task.abort();
        eventually(10, "beta down", || status("beta") == "down").await;
        let dom = browse(&url, &["--dump-dom"]).await;
        assert!(
            dom.contains(r#"data-server="alpha" data-status="up""#),
            "{dom}"
        );
        assert!(
            dom.contains(r#"data-server="beta" data-status="down""#),
            "{dom}"
        );
        assert!(
            dom.contains("down: last check"),
            "the reason is shown: {dom}"
        );

        let shot = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png");
        let _ = std::fs::remove_file(&shot);
        browse(
            &url,
            &[
                &format!("--screenshot={}", shot.display()),
                "--window-size=1400,900",
            ],
        )
        .await;
        let png = std::fs::read(&shot).expect("a screenshot");
        assert!(
            png.starts_with(b"\x89PNG") && png.len() > 10_000,
            "{} bytes",
            png.len()
        );
    })
    .await;
}
