//! tcp mode through real sockets: the daemon on 127.0.0.1:0 in front of in-test
//! origins; every test asserts on the bytes that crossed and on the counters.

use fulcrum_testkit as support;

use std::time::Duration;

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One tcp frontend `fe` in front of backend `be`, one server at `a`.
fn one_conf(a: std::net::SocketAddr) -> Conf {
    Conf::new().frontend(Frontend::tcp("fe").to("be")).backend(
        Backend::new("be")
            .timeouts([("connect", "1s")])
            .server("a", a),
    )
}

fn one(a: &Origin, splice: bool) -> fulcrum::daemon::Running {
    one_conf(a.addr).global("splice", splice).start()
}

#[tokio::test]
async fn one_byte_round_trip() {
    bounded(10, async {
        let a = Origin::start("a", Behaviour::Echo).await;
        let d = one(&a, true);
        let fe = d.addr("fe").unwrap();
        assert_eq!(exchange(fe, b"x").await, b"x");
        let st = d.stats();
        let f = st.frontend("fe").unwrap();
        assert_eq!((f.conn_total, f.bytes_in, f.bytes_out), (1, 1, 1));
        let b = st.backend("be").unwrap();
        assert_eq!((b.conn_total, b.bytes_in, b.bytes_out), (1, 1, 1));
        let s = b.server("a").unwrap();
        assert_eq!((s.conn_total, s.bytes_in, s.bytes_out), (1, 1, 1));
        eventually(5, "connection gauge back to 0", || {
            d.stats().frontend("fe").unwrap().conn_cur == 0
        })
        .await;
    })
    .await;
}

/// 64 MiB up and 64 MiB down at the same time, both checksummed.
async fn big_transfer(splice: bool) {
    const LEN: usize = 64 << 20;
    let a = Origin::start("a", Behaviour::Echo).await;
    let d = one(&a, splice);
    let fe = d.addr("fe").unwrap();
    let data = pattern(LEN, 7);
    let mut want = Checksum::default();
    want.update(&data);
    let s = TcpStream::connect(fe).await.unwrap();
    let (mut r, mut w) = s.into_split();
    let writer = tokio::spawn(async move {
        w.write_all(&data).await.unwrap();
        w.shutdown().await.unwrap();
    });
    let mut got = Checksum::default();
    let mut n = 0usize;
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let k = r.read(&mut buf).await.unwrap();
        if k == 0 {
            break;
        }
        got.update(&buf[..k]);
        n += k;
    }
    writer.await.unwrap();
    assert_eq!(n, LEN);
    assert_eq!(got.0, want.0, "bytes arrived altered or out of order");
    let f = d.stats().frontend("fe").unwrap().clone();
    assert_eq!((f.bytes_in, f.bytes_out), (LEN as u64, LEN as u64));
}

#[tokio::test]
async fn transfer_64_mib_each_way_with_splice() {
    bounded(60, big_transfer(true)).await;
}

#[tokio::test]
async fn transfer_64_mib_each_way_with_copy() {
    bounded(60, big_transfer(false)).await;
}

#[tokio::test]
async fn half_close_keeps_the_other_direction_flowing() {
    bounded(10, async {
        for splice in [true, false] {
            let a = Origin::start("a", Behaviour::SinkThenReport).await;
            let d = one(&a, splice);
            let data = pattern(1 << 20, 3);
            let mut sum = Checksum::default();
            sum.update(&data);
            // The client sends, then FIN; only after that FIN does the origin answer.
            let reply = exchange(d.addr("fe").unwrap(), &data).await;
            assert_eq!(
                String::from_utf8(reply).unwrap(),
                format!("a got {} bytes sum {:016x}\n", data.len(), sum.0),
                "splice={splice}"
            );
        }
    })
    .await;
}

#[tokio::test]
async fn server_half_close_keeps_the_client_direction_flowing() {
    bounded(10, async {
        // The origin answers first and closes its side; the client keeps sending after.
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let origin = tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            s.write_all(b"hello, then FIN").await.unwrap();
            s.shutdown().await.unwrap();
            let mut got = Vec::new();
            s.read_to_end(&mut got).await.unwrap();
            got
        });
        let d = one_conf(addr).global("splice", true).start();
        let mut c = TcpStream::connect(d.addr("fe").unwrap()).await.unwrap();
        let mut first = Vec::new();
        c.read_to_end(&mut first).await.unwrap();
        assert_eq!(first, b"hello, then FIN");
        c.write_all(b"still talking").await.unwrap();
        c.shutdown().await.unwrap();
        assert_eq!(origin.await.unwrap(), b"still talking");
    })
    .await;
}

/// Servers `dead` then `live` (rr: every first attempt goes to `dead`).
fn two(
    dead: std::net::SocketAddr,
    live: std::net::SocketAddr,
    retries: i64,
) -> fulcrum::daemon::Running {
    Conf::new()
        .frontend(Frontend::tcp("fe").to("be"))
        .backend(
            Backend::new("be")
                .set("retries", retries)
                .timeouts([("connect", "1s")])
                .server("dead", dead)
                .server("live", live),
        )
        .start()
}

#[tokio::test]
async fn connect_failure_moves_to_the_next_server() {
    bounded(10, async {
        let live = Origin::start("live", Behaviour::Echo).await;
        let dead = dead_addr().await;
        let d = two(dead, live.addr, 1);
        for i in 0..6u8 {
            assert_eq!(exchange(d.addr("fe").unwrap(), &[i]).await, [i]);
        }
        let st = d.stats();
        let b = st.backend("be").unwrap();
        assert_eq!(b.conn_total, 6);
        assert_eq!(b.server("live").unwrap().conn_total, 6);
        assert_eq!(b.server("dead").unwrap().conn_total, 0);
        // rr's cursor moves past the server it finally used, so every first attempt
        // goes to the dead server (no health check yet): 6 failures, 6 retries.
        assert_eq!(b.server("dead").unwrap().connect_errors, 6);
        assert_eq!((b.connect_errors, b.retries, b.no_server), (6, 6, 0));
    })
    .await;
}

#[tokio::test]
async fn all_servers_down_closes_the_client_promptly_and_counts() {
    bounded(10, async {
        let (d1, d2) = (dead_addr().await, dead_addr().await);
        let d = two(d1, d2, 3);
        let mut c = TcpStream::connect(d.addr("fe").unwrap()).await.unwrap();
        c.write_all(b"anyone?").await.unwrap();
        // Closed within the test's bound, well before any timeout could fire.
        let got = tokio::time::timeout(Duration::from_secs(2), read_to_end(&mut c))
            .await
            .expect("client closed promptly");
        assert!(got.map(|v| v.is_empty()).unwrap_or(true));
        let st = d.stats();
        let b = st.backend("be").unwrap();
        assert_eq!(b.no_server, 1);
        assert_eq!(b.connect_errors, 4, "first attempt + 3 retries");
        assert_eq!(b.retries, 3);
        assert_eq!(b.conn_total, 0);
    })
    .await;
}

/// One frontend and one server at `a`, without timeouts.
fn plain(a: std::net::SocketAddr, fe: Frontend) -> Conf {
    Conf::new()
        .frontend(fe.to("be"))
        .backend(Backend::new("be").server("a", a))
}

/// `maxconn = 1` on the process (`global`) or on the frontend.
async fn maxconn_holds_the_excess(global: bool) {
    let a = Origin::start("a", Behaviour::Echo).await;
    let d = if global {
        plain(a.addr, Frontend::tcp("fe")).global("maxconn", 1)
    } else {
        plain(a.addr, Frontend::tcp("fe").set("maxconn", 1))
    }
    .start();
    let fe = d.addr("fe").unwrap();
    let mut first = TcpStream::connect(fe).await.unwrap();
    first.write_all(b"1").await.unwrap();
    let mut b1 = [0u8; 1];
    first.read_exact(&mut b1).await.unwrap();

    // The second connection completes its handshake (kernel backlog) but is not
    // accepted while the first is open: its bytes get no answer.
    let mut second = TcpStream::connect(fe).await.unwrap();
    second.write_all(b"2").await.unwrap();
    let mut b2 = [0u8; 1];
    let early = tokio::time::timeout(Duration::from_millis(300), second.read_exact(&mut b2)).await;
    assert!(
        early.is_err(),
        "second connection was served while at maxconn"
    );
    assert_eq!(a.conns(), 1);
    assert!(d.stats().frontend("fe").unwrap().maxconn_reached >= 1);

    drop(first);
    second.read_exact(&mut b2).await.unwrap();
    assert_eq!(&b2, b"2");
    assert_eq!(a.conns(), 2);
}

#[tokio::test]
async fn frontend_maxconn_holds_the_excess_in_the_backlog() {
    bounded(10, maxconn_holds_the_excess(false)).await;
}

#[tokio::test]
async fn global_maxconn_holds_the_excess_in_the_backlog() {
    bounded(10, maxconn_holds_the_excess(true)).await;
}

#[tokio::test]
async fn idle_connections_are_closed_and_active_ones_are_not() {
    bounded(10, async {
        let a = Origin::start("a", Behaviour::Echo).await;
        let d = plain(a.addr, Frontend::tcp("fe").timeouts([("client", "300ms")])).start();
        let fe = d.addr("fe").unwrap();
        // Active: a byte every 100 ms for a second, three times the idle timeout.
        let mut busy = TcpStream::connect(fe).await.unwrap();
        for i in 0..10u8 {
            busy.write_all(&[i]).await.unwrap();
            let mut b = [0u8; 1];
            busy.read_exact(&mut b).await.unwrap();
            assert_eq!(b[0], i);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(d.stats().frontend("fe").unwrap().idle_timeouts, 0);
        drop(busy);
        // Idle: closed by the proxy.
        let mut idle = TcpStream::connect(fe).await.unwrap();
        idle.write_all(b"x").await.unwrap();
        let mut b = [0u8; 1];
        idle.read_exact(&mut b).await.unwrap();
        let rest = read_to_end(&mut idle).await.unwrap();
        assert!(rest.is_empty());
        eventually(2, "idle timeout counted", || {
            d.stats().frontend("fe").unwrap().idle_timeouts == 1
        })
        .await;
    })
    .await;
}

#[tokio::test]
async fn server_reset_is_propagated_to_the_client() {
    bounded(10, async {
        let a = Origin::start("a", Behaviour::ResetOnData).await;
        let d = one(&a, true);
        let mut c = TcpStream::connect(d.addr("fe").unwrap()).await.unwrap();
        c.write_all(b"boom").await.unwrap();
        let err = read_to_end(&mut c)
            .await
            .expect_err("client sees a reset, not a clean close");
        assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset);
    })
    .await;
}

#[tokio::test]
async fn graceful_stop_lets_a_transfer_in_flight_finish() {
    bounded(20, async {
        let a = Origin::start("a", Behaviour::SinkThenReport).await;
        let d = one_conf(a.addr).global("grace", "10s").start();
        let fe = d.addr("fe").unwrap();
        let data = pattern(8 << 20, 11);
        let mut sum = Checksum::default();
        sum.update(&data);
        let mut c = TcpStream::connect(fe).await.unwrap();
        c.write_all(&data[..1 << 20]).await.unwrap();
        eventually(5, "transfer under way", || {
            d.stats().frontend("fe").unwrap().bytes_in > 0
        })
        .await;

        let stopping = tokio::spawn(d.shutdown());
        // New connections are refused once the stop begins...
        eventually(5, "listener closed", || {
            std::net::TcpStream::connect(fe).is_err()
        })
        .await;
        // ...while the one in flight goes on to the end.
        for chunk in data[1 << 20..].chunks(1 << 20) {
            c.write_all(chunk).await.unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        c.shutdown().await.unwrap();
        let reply = read_to_end(&mut c).await.unwrap();
        assert_eq!(
            String::from_utf8(reply).unwrap(),
            format!("a got {} bytes sum {:016x}\n", data.len(), sum.0)
        );
        let stopped = stopping.await.unwrap();
        assert!(
            stopped.drained,
            "every connection finished within the grace period"
        );
    })
    .await;
}

#[tokio::test]
async fn graceful_stop_closes_what_outlives_the_grace_period() {
    bounded(10, async {
        let a = Origin::start("a", Behaviour::Echo).await;
        let d = one_conf(a.addr).global("grace", "200ms").start();
        let mut c = TcpStream::connect(d.addr("fe").unwrap()).await.unwrap();
        c.write_all(b"x").await.unwrap();
        let mut b = [0u8; 1];
        c.read_exact(&mut b).await.unwrap();
        let stopped = d.shutdown().await;
        assert!(!stopped.drained);
        // The lingering client is closed by the proxy.
        let _ = read_to_end(&mut c).await;
    })
    .await;
}

#[tokio::test]
async fn per_core_threads_share_one_port_and_ipv6_listens() {
    bounded(10, async {
        let a = Origin::start("a", Behaviour::Echo).await;
        let fe = Frontend::tcp("fe").set("listen", ["127.0.0.1:0", "[::1]:0"].to_vec());
        let d = plain(a.addr, fe)
            .global("threads", 2)
            .global("threading", "per-core")
            .start();
        let addrs = d.addrs("fe").to_vec();
        assert_eq!(addrs.len(), 2);
        assert!(addrs[1].is_ipv6());
        for i in 0..20u8 {
            let addr = addrs[usize::from(i) % 2];
            assert_eq!(exchange(addr, &[i, i]).await, [i, i]);
        }
        assert_eq!(d.stats().frontend("fe").unwrap().conn_total, 20);
    })
    .await;
}

#[tokio::test]
async fn shared_threading_forwards_too() {
    bounded(10, async {
        let a = Origin::start("a", Behaviour::Echo).await;
        let d = one_conf(a.addr)
            .global("threads", 2)
            .global("threading", "shared")
            .start();
        for i in 0..10u8 {
            assert_eq!(exchange(d.addr("fe").unwrap(), &[i]).await, [i]);
        }
    })
    .await;
}

#[tokio::test]
async fn server_maxconn_queues_then_times_out() {
    bounded(10, async {
        let a = Origin::start("a", Behaviour::Echo).await;
        let d = Conf::new()
            .frontend(Frontend::tcp("fe").to("be"))
            .backend(
                Backend::new("be")
                    .timeouts([("queue", "400ms")])
                    .server_with("a", a.addr, table([("maxconn", 1)])),
            )
            .start();
        let fe = d.addr("fe").unwrap();
        let mut first = TcpStream::connect(fe).await.unwrap();
        first.write_all(b"1").await.unwrap();
        let mut b = [0u8; 1];
        first.read_exact(&mut b).await.unwrap();

        // Waits in the queue, then is served when the first one leaves.
        let mut second = TcpStream::connect(fe).await.unwrap();
        second.write_all(b"2").await.unwrap();
        eventually(2, "second is queued", || {
            d.stats().backend("be").unwrap().queue_cur == 1
        })
        .await;
        drop(first);
        second.read_exact(&mut b).await.unwrap();
        assert_eq!(&b, b"2");

        // Waits in the queue past the queue timeout: closed and counted.
        let mut third = TcpStream::connect(fe).await.unwrap();
        third.write_all(b"3").await.unwrap();
        let rest = read_to_end(&mut third).await.unwrap_or_default();
        assert!(rest.is_empty());
        let st = d.stats();
        let be = st.backend("be").unwrap();
        assert_eq!(
            (be.queued_total, be.queue_timeouts, be.queue_cur),
            (2, 1, 0)
        );
        assert_eq!(a.conns(), 2);
    })
    .await;
}
