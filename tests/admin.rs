//! The admin socket through a real Unix socket, changing live traffic:
//! drain, weight, addr, add and del server, shutdown sessions, disable and
//! enable a frontend, the show commands, errors that change nothing, the
//! read-only socket, and runtime changes kept across a restart.

use fulcrum_testkit as support;

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use fulcrum::daemon::Running;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};

/// Send `line` to the socket at `path` and read the answer to the end.
async fn admin_at(path: &Path, line: &str) -> String {
    let mut s = UnixStream::connect(path).await.unwrap();
    s.write_all(format!("{line}\n").as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

async fn admin(d: &Running, line: &str) -> String {
    admin_at(&d.admin_paths()[0], line).await
}

struct Setup {
    d: Running,
    o: [Origin; 3],
    dir: TempDir,
}

async fn setup(test: &str) -> Setup {
    let o = [
        Origin::start("a", Behaviour::Hello).await,
        Origin::start("b", Behaviour::Hello).await,
        Origin::start("c", Behaviour::Hello).await,
    ];
    let dir = TempDir::new(test);
    let d = Conf::new()
        .section("admin", "socket", "admin.sock")
        .section("admin", "read_only_socket", "admin-ro.sock")
        .frontend(Frontend::tcp("fe").to("be"))
        .backend(Backend::new("be").set("balance", "wrr").origins(&o[..2]))
        .start_as(&dir.join("fulcrum.toml"));
    Setup { d, o, dir }
}

async fn spread(d: &fulcrum::daemon::Running, n: usize) -> HashMap<String, usize> {
    hello_spread(d.addr("fe").unwrap(), n).await
}

#[tokio::test]
async fn drain_weight_addr_add_and_del_change_the_traffic() {
    bounded(30, async {
        let s = setup("admin-traffic").await;
        let d = &s.d;
        assert_eq!(
            spread(d, 4).await,
            HashMap::from([("a".into(), 2), ("b".into(), 2)])
        );

        // Drain a with a connection open on it: no new connection goes to a,
        // the open one still works.
        let (first, mut held) = hello_open(d.addr("fe").unwrap()).await;
        assert_eq!(first, "a");
        assert_eq!(
            admin(d, "set server be/a state drain").await,
            "be/a: state drain\n"
        );
        assert_eq!(spread(d, 4).await, HashMap::from([("b".into(), 4)]));
        held.write_all(b"still here\n").await.unwrap();
        let mut echo = [0u8; 11];
        held.read_exact(&mut echo).await.unwrap();
        assert_eq!(&echo, b"still here\n");
        // Not removable while it serves a connection.
        let busy = admin(d, "del server be/a").await;
        assert!(
            busy.starts_with("error: server \"be/a\" is not removable"),
            "{busy}"
        );
        drop(held);
        eventually(5, "a idle", || {
            d.stats().backends[0].servers[0].conn_cur == 0
        })
        .await;
        assert_eq!(
            admin(d, "set server be/a state ready").await,
            "be/a: state ready\n"
        );

        // Weight: 1:3.
        assert_eq!(
            admin(d, "set server be/b weight 3").await,
            "be/b: weight 3\n"
        );
        assert_eq!(
            spread(d, 8).await,
            HashMap::from([("a".into(), 2), ("b".into(), 6)])
        );
        // A per cent of the file's weight (1): 300 % is 3 again.
        assert_eq!(
            admin(d, "set server be/a weight 300%").await,
            "be/a: weight 3\n"
        );
        assert_eq!(
            spread(d, 6).await,
            HashMap::from([("a".into(), 3), ("b".into(), 3)])
        );

        // addr: b's traffic now reaches origin c.
        let moved = admin(d, &format!("set server be/b addr {}", s.o[2].addr)).await;
        assert_eq!(moved, format!("be/b: address {}\n", s.o[2].addr));
        assert_eq!(
            spread(d, 6).await,
            HashMap::from([("a".into(), 3), ("c".into(), 3)])
        );

        // add: balanced at once; del when-drained: drains, waits, removes.
        let added = admin(d, &format!("add server be/n {} weight 3", s.o[1].addr)).await;
        assert_eq!(added, format!("be/n: added at {}\n", s.o[1].addr));
        let m = spread(d, 9).await;
        assert_eq!(m.get("b"), Some(&3), "{m:?}");
        // A connection on n (whose origin names itself "b").
        let held = loop {
            let (name, c) = hello_open(d.addr("fe").unwrap()).await;
            if name == "b" {
                break c;
            }
        };
        let deleting = {
            let path = d.admin_paths()[0].clone();
            tokio::spawn(async move { admin_at(&path, "del server be/n when-drained 5s").await })
        };
        // The command drains n first, then waits for its connection.
        eventually(5, "n draining", || {
            d.stats().backend("be").unwrap().server("n").unwrap().admin == "drain"
        })
        .await;
        assert!(!deleting.is_finished(), "waits for the open connection");
        drop(held);
        assert_eq!(deleting.await.unwrap(), "be/n: removed\n");
        assert!(!servers_of(d, "be").contains(&"n".to_string()));

        let diff = admin(d, "show config diff").await;
        assert!(diff.contains("~ be/a: weight 3 instead of 1"), "{diff}");
        assert!(
            diff.contains(&format!(
                "~ be/b: address {} instead of {}",
                s.o[2].addr, s.o[1].addr
            )),
            "{diff}"
        );
        assert!(
            !diff.contains("be/n"),
            "added then removed: nothing left: {diff}"
        );
    })
    .await;
}

#[tokio::test]
async fn shutdown_sessions_and_disable_frontend() {
    bounded(30, async {
        let s = setup("admin-sessions").await;
        let d = &s.d;
        let fe = d.addr("fe").unwrap();
        let (name, mut on_a) = hello_open(fe).await;
        assert_eq!(name, "a");
        let (_, _on_b) = hello_open(fe).await;
        let sessions = admin(d, "show sessions").await;
        assert!(
            sessions.starts_with("# id client frontend age state server\n"),
            "{sessions}"
        );
        assert!(
            sessions.contains(&format!(" {} fe ", on_a.local_addr().unwrap())),
            "{sessions}"
        );
        assert!(
            sessions.contains(" active be/a\n") && sessions.contains(" active be/b\n"),
            "{sessions}"
        );

        assert_eq!(
            admin(d, "shutdown sessions server be/a").await,
            "1 session(s) closed\n"
        );
        let mut rest = Vec::new();
        let n = tokio::time::timeout(Duration::from_secs(5), on_a.read_to_end(&mut rest)).await;
        assert!(n.is_ok(), "the client saw its connection end");
        eventually(5, "one session left", || {
            d.stats().frontends[0].conn_cur == 1
        })
        .await;

        // Disabled: a new client waits in the backlog; enabled: it is served.
        assert_eq!(
            admin(d, "disable frontend fe").await,
            "frontend fe: not accepting (clients wait in the backlog)\n"
        );
        assert!(admin(d, "show frontend").await.contains("fe tcp DISABLED"));
        let accepted = d.stats().frontends[0].conn_total;
        let waiting = tokio::spawn(hello(fe, b""));
        eventually(5, "the client in the listener's backlog", || {
            accept_queue(fe.port()) == 1
        })
        .await;
        assert!(!waiting.is_finished(), "not accepted while disabled");
        assert_eq!(d.stats().frontends[0].conn_total, accepted);
        assert_eq!(
            admin(d, "enable frontend fe").await,
            "frontend fe: accepting\n"
        );
        let served = tokio::time::timeout(Duration::from_secs(5), waiting).await;
        assert!(served.is_ok(), "accepted once enabled");
        assert!(
            admin(d, "disable frontend nope")
                .await
                .starts_with("error: no frontend \"nope\"")
        );
    })
    .await;
}

#[tokio::test]
async fn the_show_commands_answer() {
    bounded(30, async {
        let s = setup("admin-show").await;
        let d = &s.d;
        spread(d, 2).await;
        let info = admin(d, "show info").await;
        assert!(info.starts_with("Name: fulcrum\nVersion: "), "{info}");
        assert!(
            info.contains("\nGeneration: 1\n") && info.contains("\nServers: 2\n"),
            "{info}"
        );
        let csv = admin(d, "show stat").await;
        assert!(csv.starts_with("# pxname,svname,qcur,"), "{csv}");
        assert!(csv.contains("\nbe,a,"), "{csv}");
        let json: serde_json::Value =
            serde_json::from_str(&admin(d, "show stat json").await).unwrap();
        assert_eq!(json["backends"][0]["counters"]["conn_total"], 2);
        let st = admin(d, "show servers state be").await;
        assert!(
            st.contains(&format!("\nbe a {} up ready up 1/1 0 1 -\n", s.o[0].addr)),
            "{st}"
        );
        assert_eq!(admin(d, "show backend").await, "# name\nbe\n");
        assert_eq!(admin(d, "show errors").await, "no rejected request\n");
        assert_eq!(
            admin(d, "show config diff").await,
            "the running state is the config file's\n"
        );
        let two = admin(d, "show backend; show backend").await;
        assert_eq!(two, "# name\nbe\n# name\nbe\n");
        assert!(
            admin(d, "help")
                .await
                .contains("set server B/S state ready|drain|maint")
        );
    })
    .await;
}

#[tokio::test]
async fn show_errors_lists_a_rejected_request() {
    bounded(30, async {
        let a = Origin::http("a", "").await;
        let dir = TempDir::new("admin-errors");
        let d = Conf::new()
            .section("admin", "socket", "admin.sock")
            .frontend(Frontend::web())
            .backend(Backend::app(a.addr))
            .start_as(&dir.join("f.toml"));
        let mut c = TcpStream::connect(d.addr("web").unwrap()).await.unwrap();
        let me = c.local_addr().unwrap();
        let r = roundtrip(&mut c, b"GET /x HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n").await;
        assert_eq!(r.unwrap().status, 400);
        let e = admin(&d, "show errors web").await;
        assert!(
            e.contains(&format!(
                "] frontend web client {me} class duplicate_host status 400"
            )),
            "{e}"
        );
        assert!(
            e.contains(
                "  00000  GET /x HTTP/1.1\\r\\n\n  00017  Host: a\\r\\n\n  00026  Host: b\\r\\n\n"
            ),
            "{e}"
        );
        assert!(
            admin(&d, "show errors nope")
                .await
                .starts_with("error: no frontend")
        );
    })
    .await;
}

#[tokio::test]
async fn mistakes_answer_one_error_line_and_change_nothing() {
    bounded(30, async {
        let s = setup("admin-errors").await;
        let d = &s.d;
        let e = |t: &str| t.lines().count() == 1 && t.starts_with("error: ");
        for bad in [
            "shwo info",
            "set server be/zz state drain",
            "set server nope/a state drain",
            "set server be/a state sideways",
            "set server be/a weight 300",
            "add server be/a 127.0.0.1:1",
            "add server be/x 127.0.0.1:1 check",
            "del server be/a",
        ] {
            let a = admin(d, bad).await;
            assert!(e(&a), "{bad}: {a}");
        }
        // Nothing after an error on the same line runs.
        let a = admin(
            d,
            "set server be/zz state maint; set server be/a state maint",
        )
        .await;
        assert!(e(&a), "{a}");
        assert_eq!(d.stats().backends[0].servers[0].admin, "ready");
        assert_eq!(
            admin(d, "show config diff").await,
            "the running state is the config file's\n"
        );

        // The read-only socket shows but never changes.
        let ro = &d.admin_paths()[1];
        assert!(admin_at(ro, "show backend").await.starts_with("# name"));
        let refused = admin_at(ro, "show info; set server be/a state maint").await;
        assert!(
            refused.starts_with("error: this socket is read-only"),
            "{refused}"
        );
        assert_eq!(d.stats().backends[0].servers[0].admin, "ready");

        // A line past the bound is cut off.
        let mut c = UnixStream::connect(&d.admin_paths()[0]).await.unwrap();
        let _ = c
            .write_all(&vec![b'x'; fulcrum::admin::MAX_LINE + 10])
            .await;
        let mut out = String::new();
        let _ = c.read_to_string(&mut out).await;
        assert!(out.starts_with("error: line longer than"), "{out}");
        // Interactive: a prompt after each answer, until quit.
        let mut c = UnixStream::connect(&d.admin_paths()[0]).await.unwrap();
        c.write_all(b"prompt\nshow backend\nquit\n").await.unwrap();
        let mut out = String::new();
        c.read_to_string(&mut out).await.unwrap();
        assert_eq!(out, "> # name\nbe\n> ");
        let _ = &s.dir;
    })
    .await;
}

#[tokio::test]
async fn runtime_changes_survive_a_restart_and_a_bad_state_file_is_ignored() {
    bounded(30, async {
        let s = setup("admin-durable").await;
        let conf = s.dir.join("fulcrum.toml");
        let text = std::fs::read_to_string(&conf).unwrap();
        admin(&s.d, "set server be/a state maint").await;
        admin(&s.d, "set server be/b weight 4").await;
        admin(&s.d, &format!("add server be/c {} weight 2", s.o[2].addr)).await;
        drop(s.d);

        let d = start_named(conf.to_str().unwrap(), &text);
        let st = d.stats();
        let be = st.backend("be").unwrap();
        assert_eq!(be.server("a").unwrap().admin, "maint");
        assert_eq!(be.server("b").unwrap().weight, 4);
        assert_eq!(be.server("c").unwrap().weight, 2);
        assert_eq!(
            spread(&d, 6).await,
            HashMap::from([("b".into(), 4), ("c".into(), 2)])
        );
        let diff = admin(&d, "show config diff").await;
        assert_eq!(diff.lines().count(), 3, "{diff}");

        // The file's weight for b changes: the file wins at the next start.
        drop(d);
        let mut doc: toml::Table = text.parse().unwrap();
        doc["backend"][0]["servers"][1]
            .as_table_mut()
            .unwrap()
            .insert("weight".into(), 7.into());
        let edited = toml::to_string(&doc).unwrap();
        assert_ne!(edited, text);
        std::fs::write(&conf, &edited).unwrap();
        let d = start_named(conf.to_str().unwrap(), &edited);
        assert_eq!(
            d.stats().backend("be").unwrap().server("b").unwrap().weight,
            7
        );
        assert_eq!(
            d.stats().backend("be").unwrap().server("a").unwrap().admin,
            "maint"
        );
        drop(d);

        // A corrupt state file: reported, ignored, the file's configuration runs.
        std::fs::write(s.dir.join("fulcrum.toml.state"), "{ corrupt").unwrap();
        let d = start_named(conf.to_str().unwrap(), &edited);
        let st = d.stats();
        assert_eq!(st.backend("be").unwrap().servers.len(), 2);
        assert_eq!(
            st.backend("be").unwrap().server("a").unwrap().admin,
            "ready"
        );
    })
    .await;
}

#[tokio::test]
async fn write_config_puts_the_changes_in_the_file_and_reload_reads_it() {
    bounded(30, async {
        let s = setup("admin-write").await;
        let d = &s.d;
        let conf = s.dir.join("fulcrum.toml");
        admin(d, "set server be/b weight 5").await;
        admin(d, "set server be/a state drain").await;
        let w = admin(d, "write config").await;
        assert!(w.starts_with("1 change(s) written to "), "{w}");
        let text = std::fs::read_to_string(&conf).unwrap();
        assert!(text.contains("weight = 5"), "{text}");
        assert_eq!(
            admin(d, "show config diff").await.lines().count(),
            1,
            "the drain stays"
        );

        // reload: the file again (now with weight 5), the drain on top.
        let r = admin(d, "reload").await;
        assert!(r.starts_with("reloaded: generation "), "{r}");
        assert_eq!(
            d.stats().backend("be").unwrap().server("b").unwrap().weight,
            5
        );
        assert_eq!(
            d.stats().backend("be").unwrap().server("a").unwrap().admin,
            "drain"
        );
        // A broken file: every error, nothing changes, counted.
        std::fs::write(
            &conf,
            text.replace("balance = \"wrr\"", "balance = \"nope\""),
        )
        .unwrap();
        let r = admin(d, "reload").await;
        assert!(
            r.starts_with("error: reload refused, the running configuration stays:"),
            "{r}"
        );
        assert!(r.contains("fulcrum.toml:"), "names the file and line: {r}");
        assert_eq!(d.stats().global.reloads_failed, 1);
        assert_eq!(spread(d, 2).await, HashMap::from([("b".into(), 2)]));
    })
    .await;
}

#[tokio::test]
async fn the_socket_refuses_a_world_writable_directory() {
    bounded(10, async {
        let dir = TempDir::new("admin-open-dir");
        let mut perm = std::fs::metadata(&dir.0).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o777);
        std::fs::set_permissions(&dir.0, perm).unwrap();
        let text = Conf::new()
            .section("admin", "socket", "a.sock")
            .frontend(Frontend::tcp("f").to("b"))
            .backend(Backend::new("b").server("s", "127.0.0.1:9".parse().unwrap()))
            .text();
        let cfg = fulcrum::config::parse(dir.join("f.toml").to_str().unwrap(), &text).unwrap();
        let e = fulcrum::daemon::start(quiet(cfg, &text))
            .err()
            .expect("refused");
        assert!(
            e.to_string()
                .contains("its directory is writable by everyone"),
            "{e}"
        );
    })
    .await;
}

#[tokio::test]
async fn the_admin_example_drains_a_server_through_its_socket() {
    bounded(30, async {
        let a = Origin::http("a", "").await;
        let b = Origin::http("b", "").await;
        let dir = TempDir::new("admin-example");
        let text = localize_addrs("config/examples/admin.toml", &[a.addr, b.addr])
            .replace("/run/fulcrum/", "")
            .replace("/var/lib/fulcrum/", "");
        let d = start_named(dir.join("admin.toml").to_str().unwrap(), &text);
        eventually(10, "both up", || {
            d.stats().backends[0]
                .servers
                .iter()
                .all(|s| s.status == "up")
        })
        .await;
        let mode = |p: &Path| {
            std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(p).unwrap().permissions())
                & 0o777
        };
        assert_eq!(mode(&d.admin_paths()[0]), 0o660);
        assert_eq!(
            admin(&d, "set server app/a state drain").await,
            "app/a: state drain\n"
        );
        let www = d.addr("www").unwrap();
        for i in 0..4 {
            assert_eq!(
                get(www, &format!("/{i}"), "")
                    .await
                    .header("x-server")
                    .unwrap(),
                "b"
            );
        }
        assert!(
            dir.join("fulcrum.state").exists(),
            "kept where the example says"
        );
        let ro = admin_at(&d.admin_paths()[1], "show servers state app").await;
        assert!(ro.contains(" drain drain up "), "{ro}");
        // A reload of the example (a's weight changed): the drain stays.
        let file = dir.join("admin.toml");
        std::fs::write(&file, text.replace("weight = 2", "weight = 3")).unwrap();
        let r = admin(&d, "reload").await;
        assert!(r.starts_with("reloaded: generation 2"), "{r}");
        let app = d.shared().snapshot();
        let app = app.backend("app").unwrap();
        assert_eq!(app.drain_timeout, std::time::Duration::from_secs(30));
        let ro = admin_at(&d.admin_paths()[1], "show servers state app").await;
        assert!(ro.contains(" drain drain up "), "{ro}");
        let st = d.stats();
        assert_eq!(
            st.backend("app")
                .unwrap()
                .server("a")
                .unwrap()
                .weight_configured,
            3
        );
    })
    .await;
}
