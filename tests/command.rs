//! The typed command layer (`command.rs`) on a running daemon, through real
//! sockets: what the admin socket and the stats page will drive.

use fulcrum_testkit as support;

use std::collections::HashMap;

use fulcrum::command::{AdminState, Command, CommandError, Reply};
use support::*;

async fn three() -> (fulcrum::daemon::Running, [Origin; 3]) {
    let o = [
        Origin::start("a", Behaviour::Hello).await,
        Origin::start("b", Behaviour::Hello).await,
        Origin::start("c", Behaviour::Hello).await,
    ];
    let d = Conf::new()
        .frontend(Frontend::tcp("fe").to("be"))
        .backend(Backend::new("be").set("balance", "wrr").origins(&o[..2]))
        .start();
    (d, o)
}

async fn spread(d: &fulcrum::daemon::Running, n: usize) -> HashMap<String, usize> {
    hello_spread(d.addr("fe").unwrap(), n).await
}

#[tokio::test]
async fn weights_states_and_membership_change_the_next_picks() {
    bounded(20, async {
        let (d, o) = three().await;
        assert_eq!(
            spread(&d, 10).await,
            HashMap::from([("a".into(), 5), ("b".into(), 5)])
        );
        // Weight 3 to 1: the table is rebuilt, the next picks follow it.
        let r = d.command(Command::SetWeight {
            backend: "be".into(),
            server: "a".into(),
            weight: 3,
        });
        assert!(matches!(r, Ok(Reply::Generation(2))), "{r:?}");
        assert_eq!(
            spread(&d, 8).await,
            HashMap::from([("a".into(), 6), ("b".into(), 2)])
        );
        // Maintenance: no new connection to a.
        set_state(&d, "be", "a", AdminState::Maint);
        assert_eq!(spread(&d, 4).await, HashMap::from([("b".into(), 4)]));
        // A server added at runtime takes traffic at once.
        d.command(Command::AddServer(fulcrum::command::NewServer {
            backend: "be".into(),
            server: "c".into(),
            addr: o[2].addr,
            weight: 1,
            backup: false,
            check: false,
        }))
        .unwrap();
        assert_eq!(
            spread(&d, 4).await,
            HashMap::from([("b".into(), 2), ("c".into(), 2)])
        );
        // Removal is refused unless the server is in maint or drained.
        let e = d.command(Command::DelServer {
            backend: "be".into(),
            server: "b".into(),
        });
        assert!(
            matches!(e, Err(CommandError::Busy { open: 0, .. })),
            "{e:?}"
        );
        d.command(Command::DelServer {
            backend: "be".into(),
            server: "a".into(),
        })
        .unwrap();
        assert_eq!(servers_of(&d, "be"), ["b", "c"]);
        // Unknown names are one clear error each.
        let e = d.command(Command::SetHealth {
            backend: "nope".into(),
            server: "a".into(),
            up: true,
        });
        assert_eq!(e.unwrap_err().to_string(), "no backend \"nope\"");
        let e = d.command(Command::SetWeight {
            backend: "be".into(),
            server: "zz".into(),
            weight: 1,
        });
        assert_eq!(
            e.unwrap_err().to_string(),
            "backend \"be\" has no server \"zz\""
        );
        let e = d.command(Command::SetWeight {
            backend: "be".into(),
            server: "b".into(),
            weight: 999,
        });
        assert_eq!(e.unwrap_err(), CommandError::BadWeight(999));
        // Counters carry over every rebuild.
        let Ok(Reply::Stats(st)) = d.command(Command::ShowStat) else {
            panic!()
        };
        assert_eq!(st.frontend("fe").unwrap().conn_total, 26);
    })
    .await;
}

#[tokio::test]
async fn a_draining_server_keeps_its_open_connections_and_takes_no_new_one() {
    bounded(20, async {
        let (d, _o) = three().await;
        let (first, held) = hello_open(d.addr("fe").unwrap()).await;
        set_state(&d, "be", &first, AdminState::Drain);
        let other = if first == "a" { "b" } else { "a" };
        assert_eq!(spread(&d, 4).await, HashMap::from([(other.to_string(), 4)]));
        // The open one still talks to its server (Hello origins echo).
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut held = held;
        held.write_all(b"ping").await.unwrap();
        let mut b = [0u8; 4];
        held.read_exact(&mut b).await.unwrap();
        assert_eq!(&b, b"ping");
    })
    .await;
}
