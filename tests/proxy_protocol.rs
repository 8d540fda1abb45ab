//! PROXY protocol through real sockets: accepted on a listener, sent to servers.

use fulcrum_testkit as support;

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A frontend accepting PROXY headers (or not) in front of one server that
/// is sent them in version `send` ("v1", "v2"; "" for none).
fn daemon(a: &Origin, accept: bool, send: &str) -> fulcrum::daemon::Running {
    let more = if send.is_empty() {
        Default::default()
    } else {
        table([("send_proxy", send)])
    };
    Conf::new()
        .frontend(
            Frontend::tcp("fe")
                .to("be")
                .set("accept_proxy", accept)
                .timeouts([("client", "2s")]),
        )
        .backend(Backend::new("be").server_with("a", a.addr, more))
        .start()
}

#[tokio::test]
async fn v1_in_v2_out_carries_the_real_client() {
    bounded(10, async {
        let a = Origin::start("a", Behaviour::Record).await;
        let d = daemon(&a, true, "v2");
        // The PROXY header and the first payload bytes arrive in one segment.
        let out = exchange(
            d.addr("fe").unwrap(),
            b"PROXY TCP4 203.0.113.7 192.0.2.1 5555 443\r\nhello",
        )
        .await;
        assert!(out.is_empty());
        let mut want = b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x0c".to_vec();
        want.extend_from_slice(&[203, 0, 113, 7, 192, 0, 2, 1, 0x15, 0xb3, 0x01, 0xbb]);
        want.extend_from_slice(b"hello");
        eventually(5, "origin saw the whole stream", || {
            a.conns() == 1 && a.received(0).len() == want.len()
        })
        .await;
        assert_eq!(a.received(0), want);
        // Only the client's payload counts as client bytes.
        assert_eq!(d.stats().frontend("fe").unwrap().bytes_in, 5);
    })
    .await;
}

#[tokio::test]
async fn v2_in_v1_out_with_header_split_across_writes() {
    bounded(10, async {
        let a = Origin::start("a", Behaviour::Record).await;
        let d = daemon(&a, true, "v1");
        let mut hdr = b"\r\n\r\n\0\r\nQUIT\n\x21\x21\x00\x24".to_vec();
        let src: std::net::Ipv6Addr = "2001:db8::7".parse().unwrap();
        let dst: std::net::Ipv6Addr = "2001:db8::1".parse().unwrap();
        hdr.extend_from_slice(&src.octets());
        hdr.extend_from_slice(&dst.octets());
        hdr.extend_from_slice(&[0x30, 0x39, 0x00, 0x50]);
        let mut c = TcpStream::connect(d.addr("fe").unwrap()).await.unwrap();
        c.write_all(&hdr[..10]).await.unwrap();
        c.flush().await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        c.write_all(&hdr[10..]).await.unwrap();
        c.write_all(b"data").await.unwrap();
        c.shutdown().await.unwrap();
        let _ = read_to_end(&mut c).await;
        let want = b"PROXY TCP6 2001:db8::7 2001:db8::1 12345 80\r\ndata";
        eventually(5, "origin saw the whole stream", || {
            a.conns() == 1 && a.received(0).len() == want.len()
        })
        .await;
        assert_eq!(a.received(0), want);
    })
    .await;
}

#[tokio::test]
async fn send_proxy_without_accept_uses_the_socket_addresses() {
    bounded(10, async {
        let a = Origin::start("a", Behaviour::Record).await;
        let d = daemon(&a, false, "v1");
        let fe = d.addr("fe").unwrap();
        let mut c = TcpStream::connect(fe).await.unwrap();
        let me = c.local_addr().unwrap();
        c.write_all(b"!").await.unwrap();
        c.shutdown().await.unwrap();
        let _ = read_to_end(&mut c).await;
        let want = format!(
            "PROXY TCP4 127.0.0.1 127.0.0.1 {} {}\r\n!",
            me.port(),
            fe.port()
        );
        eventually(5, "origin saw the stream", || {
            a.conns() == 1 && a.received(0).len() == want.len()
        })
        .await;
        assert_eq!(String::from_utf8(a.received(0)).unwrap(), want);
    })
    .await;
}

#[tokio::test]
async fn missing_or_malformed_header_is_rejected_and_counted() {
    bounded(10, async {
        let a = Origin::start("a", Behaviour::Record).await;
        let d = daemon(&a, true, "");
        let bad: [&[u8]; 3] = [
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 99999 1\r\n",
            b"\r\n\r\n\0\r\nQUIT\n\x31\x11\x00\x0c123456789012",
        ];
        for b in bad {
            let mut c = TcpStream::connect(d.addr("fe").unwrap()).await.unwrap();
            c.write_all(b).await.unwrap();
            let mut buf = Vec::new();
            let _ = c.read_to_end(&mut buf).await;
            assert!(buf.is_empty());
        }
        // A client that never sends a header is cut at the client timeout.
        let mut silent = TcpStream::connect(d.addr("fe").unwrap()).await.unwrap();
        let _ = read_to_end(&mut silent).await;
        eventually(5, "all four counted", || {
            d.stats().frontend("fe").unwrap().proxy_errors == 4
        })
        .await;
        assert_eq!(a.conns(), 0, "no rejected connection reached a server");
    })
    .await;
}

#[tokio::test]
async fn local_command_keeps_the_socket_addresses() {
    bounded(10, async {
        let a = Origin::start("a", Behaviour::Record).await;
        let d = daemon(&a, true, "v1");
        let fe = d.addr("fe").unwrap();
        let mut c = TcpStream::connect(fe).await.unwrap();
        let me = c.local_addr().unwrap();
        c.write_all(b"\r\n\r\n\0\r\nQUIT\n\x20\x00\x00\x00ok")
            .await
            .unwrap();
        c.shutdown().await.unwrap();
        let _ = read_to_end(&mut c).await;
        let want = format!(
            "PROXY TCP4 127.0.0.1 127.0.0.1 {} {}\r\nok",
            me.port(),
            fe.port()
        );
        eventually(5, "origin saw the stream", || {
            a.conns() == 1 && a.received(0).len() == want.len()
        })
        .await;
        assert_eq!(String::from_utf8(a.received(0)).unwrap(), want);
    })
    .await;
}
