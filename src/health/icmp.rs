//! ICMP echo checks: an unprivileged ICMP datagram socket where the kernel
//! allows it (`net.ipv4.ping_group_range`), a raw socket otherwise (root or
//! CAP_NET_RAW). `available` tells at start whether either can be had, so a
//! configuration with icmp checks fails with a clear message instead of every
//! check failing.

use std::io;
use std::net::{IpAddr, SocketAddr};

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;

/// How a socket for ICMP was had.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Datagram,
    Raw,
}

fn open(ip: IpAddr) -> io::Result<(Socket, Kind)> {
    let (domain, proto) = match ip {
        IpAddr::V4(_) => (Domain::IPV4, Protocol::ICMPV4),
        IpAddr::V6(_) => (Domain::IPV6, Protocol::ICMPV6),
    };
    match Socket::new(domain, Type::DGRAM, Some(proto)) {
        Ok(s) => Ok((s, Kind::Datagram)),
        Err(_) => Socket::new(domain, Type::RAW, Some(proto)).map(|s| (s, Kind::Raw)),
    }
}

/// Whether ICMP checks can run here, and how; the error says why not.
pub fn available() -> Result<Kind, String> {
    open(IpAddr::from([127, 0, 0, 1]))
        .map(|(_, k)| k)
        .map_err(|e| {
            format!(
                "icmp health checks need an ICMP socket, and neither kind can be had ({e}): allow this group in net.ipv4.ping_group_range, or run with CAP_NET_RAW"
            )
        })
}

/// Internet checksum (RFC 1071) of an ICMPv4 message.
fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An echo request: type, code, checksum, identifier, sequence, payload.
pub fn echo_request(v6: bool, id: u16, seq: u16) -> Vec<u8> {
    let mut p = vec![if v6 { 128 } else { 8 }, 0, 0, 0];
    p.extend_from_slice(&id.to_be_bytes());
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(b"fulcrum health check");
    if !v6 {
        // The kernel computes ICMPv6 checksums (they cover a pseudo-header).
        let c = checksum(&p);
        p[2..4].copy_from_slice(&c.to_be_bytes());
    }
    p
}

/// Whether `packet` (as received: with an IPv4 header on a raw socket) is the
/// echo reply to sequence `seq`.
pub fn is_reply(packet: &[u8], v6: bool, raw: bool, seq: u16) -> bool {
    let icmp = if raw && !v6 {
        let ihl = usize::from(packet.first().map_or(0, |b| b & 0x0f)) * 4;
        packet.get(ihl..).unwrap_or(&[])
    } else {
        packet
    };
    let reply_type = if v6 { 129 } else { 0 };
    icmp.len() >= 8 && icmp[0] == reply_type && icmp[6..8] == seq.to_be_bytes()
}

/// One echo request to `ip` and its reply (the caller bounds the time).
pub async fn ping(ip: IpAddr) -> Result<(), String> {
    let (sock, kind) = open(ip).map_err(|e| format!("no icmp socket: {e}"))?;
    sock.set_nonblocking(true).map_err(|e| e.to_string())?;
    let sock = UdpSocket::from_std(std::net::UdpSocket::from(sock)).map_err(|e| e.to_string())?;
    let seq = (crate::net::rand::fastrand_u64() & 0xffff) as u16;
    let v6 = ip.is_ipv6();
    let id = (std::process::id() & 0xffff) as u16;
    sock.send_to(&echo_request(v6, id, seq), SocketAddr::new(ip, 0))
        .await
        .map_err(|e| super::probe::why(&e))?;
    let mut buf = [0u8; 1500];
    loop {
        let (n, from) = sock
            .recv_from(&mut buf)
            .await
            .map_err(|e| super::probe::why(&e))?;
        if from.ip() == ip && is_reply(&buf[..n], v6, kind == Kind::Raw, seq) {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_packets() {
        let p = echo_request(false, 0x1234, 7);
        assert_eq!(&p[..2], &[8, 0]);
        assert_eq!(checksum(&p), 0, "a packet with its checksum sums to zero");
        let mut reply = p.clone();
        reply[0] = 0;
        assert!(is_reply(&reply, false, false, 7));
        assert!(!is_reply(&reply, false, false, 8));
        let mut with_ip = vec![0x45; 20];
        with_ip.extend_from_slice(&reply);
        assert!(is_reply(&with_ip, false, true, 7));
        assert!(
            !is_reply(&p, false, false, 7),
            "our own request is no reply"
        );
    }
}
